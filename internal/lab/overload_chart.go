package lab

import (
	"fmt"
	"html"
	"io"
	"math"
	"time"
)

// The overload chart's parts: panels side by side, each with its axes, one
// line a policy.

// palette gives each series a colour that stays apart from its neighbours.
var palette = []string{
	"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
	"#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173",
}

// The overload chart's geometry, in SVG units.
const (
	chartW, chartH = 460, 300 // one panel
	marginL        = 56
	marginT        = 40
	marginB        = 44
	legendW        = 210
)

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
	fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>`+"\n", x0, marginT, chartW, chartH)
	for _, t := range xt {
		x := float64(x0) + t.at*chartW
		fmt.Fprintf(w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/><text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n",
			x, marginT, x, marginT+chartH, x, marginT+chartH+16, t.label)
	}
	for _, t := range yt {
		y := float64(marginT) + (1-t.at)*chartH
		fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n",
			x0, y, x0+chartW, y, x0-6, y+4, t.label)
	}
	fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", x0+chartW/2, marginT+chartH+36, html.EscapeString(xLabel))
	fmt.Fprintf(w, `<text transform="translate(%d %d) rotate(-90)" text-anchor="middle">%s</text>`+"\n", x0-40, marginT+chartH/2, html.EscapeString(yLabel))
}

func polyline(w io.Writer, x0 int, pts []point, color, title string) {
	if len(pts) == 0 {
		return
	}
	fmt.Fprintf(w, `<polyline fill="none" stroke="%s" stroke-width="2" points="`, color)
	for _, p := range pts {
		fmt.Fprintf(w, "%.1f,%.1f ", float64(x0)+p.x*chartW, float64(marginT)+(1-p.y)*chartH)
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
