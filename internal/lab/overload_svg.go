package lab

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"time"
)

// overloadRowH is the height of one experiment's row of charts.
const overloadRowH = marginT + chartH + marginB + 30

// WriteOverloadSVG draws each experiment as a row of three charts: the
// answers clients received per second over time, with the application's
// capacity dashed; the work wasted per second on clients that had given
// up, on the same scale; and the distribution of the answered clients'
// latency (the share answered within a given time, on a log scale). The
// timelines are those of each policy's first run; the latencies are all
// its runs'.
func WriteOverloadSVG(w io.Writer, results []OverloadResult) error {
	bw := bufio.NewWriter(w)
	width := 3*(marginL+chartW) + legendW + 20
	height := max(1, len(results)) * overloadRowH
	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(bw, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	for i, r := range results {
		fmt.Fprintf(bw, `<g transform="translate(0 %d)">`+"\n", i*overloadRowH+20)
		overloadRow(bw, r)
		fmt.Fprintln(bw, "</g>")
	}
	fmt.Fprintln(bw, "</svg>")
	return bw.Flush()
}

// overloadRow draws one experiment's charts and legend.
func overloadRow(w io.Writer, r OverloadResult) {
	firsts := firstRuns(r)
	maxT, maxY := 1.0, r.CapacityPerSec*1.1
	for _, run := range firsts {
		for _, s := range run.Timeline {
			maxT = math.Max(maxT, s.MS)
			maxY = math.Max(maxY, math.Max(s.AnsweredPerSec, s.WastedPerSec))
		}
	}
	load := fmt.Sprintf(" at %.3gx capacity", r.Load)
	xt, yt := linearTicks(0, maxT), linearTicks(0, maxY)

	x0 := marginL
	axes(w, x0, "Answers received per second"+load, "time (ms); rates over 500 ms", "answers / s", xt, yt)
	capY := float64(marginT) + (1-r.CapacityPerSec/maxY)*chartH
	fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#444" stroke-dasharray="6 4"><title>capacity %.0f/s</title></line>`+"\n",
		x0, capY, x0+chartW, capY, r.CapacityPerSec)
	fmt.Fprintf(w, `<text x="%d" y="%.1f" text-anchor="end" fill="#444">capacity</text>`+"\n", x0+chartW-4, capY-4)
	for i, run := range firsts {
		polyline(w, x0, rates(run.Timeline, maxT, maxY, func(s OverloadSample) float64 { return s.AnsweredPerSec }),
			palette[i%len(palette)], run.Policy+" answers")
	}

	x1 := 2*marginL + chartW
	axes(w, x1, "Work wasted on clients gone"+load, "time (ms); rates over 500 ms", "requests served too late / s", xt, yt)
	for i, run := range firsts {
		polyline(w, x1, rates(run.Timeline, maxT, maxY, func(s OverloadSample) float64 { return s.WastedPerSec }),
			palette[i%len(palette)], run.Policy+" wasted")
	}

	// Latency of the answered, log scale from 1 ms to the give-up time.
	lo, hi := 1.0, math.Max(10, r.GiveUpMS)
	hi = math.Pow(10, math.Ceil(math.Log10(hi)))
	x2 := 3*marginL + 2*chartW
	axes(w, x2, "Latency of the answered"+load, "ms from the client's start (log scale)", "share of answered clients",
		logTicks(lo, hi), linearTicks(0, 1))
	for _, p := range r.Summary {
		var ds []time.Duration
		for _, run := range r.Runs {
			if run.Policy == p.Policy {
				ds = append(ds, run.Latencies...)
			}
		}
		polyline(w, x2, cdfPoints(ds, lo, hi), palette[policyIndex(firsts, p.Policy)%len(palette)], p.Policy+" latency")
	}

	lx := 3*(marginL+chartW) + 20
	for i, run := range firsts {
		y := marginT + 10 + i*36
		label := run.Policy
		var good string
		for _, s := range r.Summary {
			if s.Policy == run.Policy {
				good = fmt.Sprintf("%.0f answers/s", s.GoodputPerSec.Median)
				if s.WastedFraction != nil {
					good += fmt.Sprintf(", %.0f%% wasted", s.WastedFraction.Median*100)
				}
			}
		}
		fmt.Fprintf(w, `<rect x="%d" y="%d" width="14" height="4" fill="%s"/>`, lx, y-4, palette[i%len(palette)])
		fmt.Fprintf(w, `<text x="%d" y="%d">%s</text>`, lx+20, y, html.EscapeString(label))
		fmt.Fprintf(w, `<text x="%d" y="%d" fill="#555">%s</text>`+"\n", lx+20, y+14, html.EscapeString(good))
	}
}

// firstRuns returns each policy's first run, in the order of the policies.
func firstRuns(r OverloadResult) []OverloadRun {
	var out []OverloadRun
	seen := map[string]bool{}
	for _, run := range r.Runs {
		if !seen[run.Policy] {
			seen[run.Policy] = true
			out = append(out, run)
		}
	}
	return out
}

// policyIndex returns the position of a policy among runs, for its color.
func policyIndex(runs []OverloadRun, policy string) int {
	for i, r := range runs {
		if r.Policy == policy {
			return i
		}
	}
	return 0
}

// cdfPoints returns the steps of the distribution of ds, in milliseconds
// on a log scale from lo to hi: the share of them within each x.
func cdfPoints(ds []time.Duration, lo, hi float64) []point {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	var pts []point
	for j, d := range ds {
		x := (math.Log10(math.Max(msOf(d), lo)) - math.Log10(lo)) / (math.Log10(hi) - math.Log10(lo))
		y := float64(j+1) / float64(len(ds))
		if j == 0 {
			pts = append(pts, point{x, 0})
		}
		pts = append(pts, point{x, pts[len(pts)-1].y}, point{x, y})
	}
	return pts
}

// smoothing is how many timeline slices a charted rate averages: the
// workers finish their requests in step, Service apart, so a rate over
// 100 ms alone swings by a worker's share.
const smoothing = 5

// rates returns a timeline's rate as chart points, each the mean of the
// slices around it.
func rates(tl []OverloadSample, maxT, maxY float64, v func(OverloadSample) float64) []point {
	var pts []point
	for i := range tl {
		lo, hi := max(0, i-smoothing/2), min(len(tl), i+smoothing/2+1)
		sum := 0.0
		for _, s := range tl[lo:hi] {
			sum += v(s)
		}
		pts = append(pts, point{tl[i].MS / maxT, sum / float64(hi-lo) / maxY})
	}
	return pts
}
