package lab

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"time"
)

// palette gives each series a color that stays apart from its neighbours.
var palette = []string{
	"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
	"#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173",
}

// chart geometry, in SVG units.
const (
	panelW, panelH = 460, 300
	marginL        = 56
	marginT        = 40
	marginB        = 44
	legendW        = 210
)

// WriteSVG draws the results as two charts side by side: the queue length
// over time, and the distribution of connect times (the share of connected
// clients that connected within a given time, on a log scale), one series
// per result.
func WriteSVG(w io.Writer, results []Result) error {
	bw := bufio.NewWriter(w)
	width := 2*(marginL+panelW) + legendW + 20
	height := marginT + panelH + marginB
	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(bw, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)

	// Queue length over time.
	maxT, maxQ := 1.0, 1
	for _, r := range results {
		for _, s := range r.Timeline {
			maxT = math.Max(maxT, s.MS)
			maxQ = max(maxQ, s.Queue)
		}
	}
	x0 := marginL
	axes(bw, x0, "Queue length over time", "time (ms)", "queue length",
		linearTicks(0, maxT), linearTicks(0, float64(maxQ)))
	for i, r := range results {
		var pts []point
		for _, s := range r.Timeline {
			pts = append(pts, point{s.MS / maxT, float64(s.Queue) / float64(maxQ)})
		}
		polyline(bw, x0, pts, palette[i%len(palette)], r.Personality+" queue")
	}

	// Connect-time distribution, log scale from 0.01 ms.
	lo, hi := 0.01, 1.0
	for _, r := range results {
		for _, d := range r.ConnectTimes {
			hi = math.Max(hi, msOf(d))
		}
	}
	hi = math.Pow(10, math.Ceil(math.Log10(hi)))
	x1 := marginL*2 + panelW
	axes(bw, x1, "Connect times", "connect time (ms, log scale)", "share of connected clients",
		logTicks(lo, hi), linearTicks(0, 1))
	for i, r := range results {
		polyline(bw, x1, cdfPoints(r.ConnectTimes, lo, hi), palette[i%len(palette)], r.Personality+" connect times")
	}

	// Legend.
	lx := 2*(marginL+panelW) + 20
	for i, r := range results {
		y := marginT + 10 + i*18
		fmt.Fprintf(bw, `<rect x="%d" y="%d" width="14" height="4" fill="%s"/>`, lx, y-4, palette[i%len(palette)])
		fmt.Fprintf(bw, `<text x="%d" y="%d">%s</text>`+"\n", lx+20, y, html.EscapeString(fmt.Sprintf("%s (%d/%d)", r.Personality, r.Connected, r.Clients)))
	}
	fmt.Fprintln(bw, "</svg>")
	return bw.Flush()
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// point is a position within a panel, both coordinates from 0 to 1.
type point struct{ x, y float64 }

// tick is an axis mark at a position from 0 to 1.
type tick struct {
	at    float64
	label string
}

func axes(w io.Writer, x0 int, title, xLabel, yLabel string, xt, yt []tick) {
	fmt.Fprintf(w, `<text x="%d" y="%d" font-size="14" font-weight="bold">%s</text>`+"\n", x0, marginT-16, html.EscapeString(title))
	fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>`+"\n", x0, marginT, panelW, panelH)
	for _, t := range xt {
		x := float64(x0) + t.at*panelW
		fmt.Fprintf(w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/><text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n",
			x, marginT, x, marginT+panelH, x, marginT+panelH+16, t.label)
	}
	for _, t := range yt {
		y := float64(marginT) + (1-t.at)*panelH
		fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n",
			x0, y, x0+panelW, y, x0-6, y+4, t.label)
	}
	fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", x0+panelW/2, marginT+panelH+36, html.EscapeString(xLabel))
	fmt.Fprintf(w, `<text transform="translate(%d %d) rotate(-90)" text-anchor="middle">%s</text>`+"\n", x0-40, marginT+panelH/2, html.EscapeString(yLabel))
}

func polyline(w io.Writer, x0 int, pts []point, color, title string) {
	if len(pts) == 0 {
		return
	}
	fmt.Fprintf(w, `<polyline fill="none" stroke="%s" stroke-width="2" points="`, color)
	for _, p := range pts {
		fmt.Fprintf(w, "%.1f,%.1f ", float64(x0)+p.x*panelW, float64(marginT)+(1-p.y)*panelH)
	}
	fmt.Fprintf(w, `"><title>%s</title></polyline>`+"\n", html.EscapeString(title))
}

// linearTicks returns about five round ticks from lo to hi.
func linearTicks(lo, hi float64) []tick {
	step := math.Pow(10, math.Floor(math.Log10((hi-lo)/5)))
	for (hi-lo)/step > 8 {
		step *= 2
	}
	var ts []tick
	for v := 0.0; v <= hi+step/1000; v += step {
		ts = append(ts, tick{(v - lo) / (hi - lo), fmt.Sprintf("%g", math.Round(v*1000)/1000)})
	}
	return ts
}

// logTicks returns a tick at each power of ten from lo to hi.
func logTicks(lo, hi float64) []tick {
	var ts []tick
	span := math.Log10(hi) - math.Log10(lo)
	for e := math.Log10(lo); e <= math.Log10(hi)+1e-9; e++ {
		ts = append(ts, tick{(e - math.Log10(lo)) / span, fmt.Sprintf("%g", math.Pow(10, e))})
	}
	return ts
}
