package lab

import (
	"bufio"
	"bytes"
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// The chart is small multiples: one panel per run, all on the same time
// axis and the same queue scale, so that systems compare at a glance.
// Each panel has two parts: above, the queue length over time with the
// capacity as a dashed line; below, the run's clients over time, stacked
// by what each had met so far, as shares of the run's clients.

// outcome is one band of a panel's lower part.
type outcome struct {
	name  string
	color string
	count func(Counts) int
}

// outcomes are the bands, from the bottom, in colours that stay apart for
// colour-blind readers (Okabe and Ito's palette). What is left above them
// is the clients still connecting.
var outcomes = []outcome{
	{"accepted", "#009E73", func(c Counts) int { return c.Accepted }},
	{"connected, waiting", "#56B4E9", func(c Counts) int { return max(c.Connected-c.Accepted-c.Reset, 0) }},
	{"reset", "#E69F00", func(c Counts) int { return c.Reset }},
	{"refused", "#D55E00", func(c Counts) int { return c.Refused }},
	{"timed out", "#CC79A7", func(c Counts) int { return c.TimedOut }},
	{"failed", "#000000", func(c Counts) int { return c.Failed }},
	{"unfinished", "#999999", func(c Counts) int { return c.Unfinished }},
}

const (
	queueColor    = "#0072B2"
	capacityColor = "#333333"
)

// Geometry, in SVG units.
const (
	panelW  = 330 // plot width, of each of several panels
	minW    = 800 // the chart's least width
	queueH  = 96  // the queue part
	gapH    = 8   // between the two parts
	clientH = 64  // the clients part
	padL    = 44  // room left of a plot for the y labels
	padR    = 16
	padT    = 34 // room above a plot for the panel's title
	padB    = 34 // room below for the time labels
)

// WriteSVG draws the results as small multiples, titled with title (what
// was run): one panel per run with its queue length over time against
// its capacity, and its clients' outcomes over time.
func WriteSVG(w io.Writer, results []Result, title string) error {
	bw := bufio.NewWriter(w)
	cols := min(3, max(len(results), 1))
	rows := (len(results) + cols - 1) / cols
	pw := panelW
	if cols*(padL+panelW+padR) < minW {
		pw = minW/cols - padL - padR
	}
	cellW := padL + pw + padR
	cellH := padT + queueH + gapH + clientH + padB
	width := cols * cellW
	var head bytes.Buffer
	headH := legend(&head, 12, 44, width-24) + 16
	height := headH + rows*cellH + 10
	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans, Arial, sans-serif" font-size="11">`+"\n", width, height, width, height)
	fmt.Fprintf(bw, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	for i, line := range titleLines(title, width) {
		fmt.Fprintf(bw, `<text x="12" y="%d" font-size="14" font-weight="bold">%s</text>`+"\n", 22+i*17, esc(line))
	}
	bw.Write(head.Bytes())

	tEnd := timeEnd(results)
	qMax := queueMax(results)
	for i, r := range results {
		x := (i%cols)*cellW + padL
		y := headH + (i/cols)*cellH + padT
		panel(bw, x, y, pw, r, tEnd, qMax)
	}
	fmt.Fprintln(bw, "</svg>")
	return bw.Flush()
}

// titleLines breaks the title so that each line fits the chart's width,
// at about 8 units a character; the legend leaves room for two lines.
func titleLines(title string, width int) []string {
	perLine := max((width-24)/8, 20)
	words := strings.Fields("backlog lab: " + title)
	var lines []string
	line := ""
	for _, w := range words {
		if line != "" && len(line)+1+len(w) > perLine && len(lines) == 0 {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(lines, line)
}

func esc(s string) string { return html.EscapeString(s) }

// legend writes the key of the lines and bands, wrapping at width, and
// returns the baseline of its last line.
func legend(w io.Writer, x, y, width int) int {
	type key struct {
		name, color string
		line, dash  bool
	}
	keys := []key{{"queue length", queueColor, true, false}, {"can wait (capacity)", capacityColor, true, true}}
	for _, o := range outcomes {
		keys = append(keys, key{name: o.name, color: o.color})
	}
	keys = append(keys, key{name: "still connecting", color: "#F2F2F2"})
	cx := x
	for _, k := range keys {
		need := 22 + 7*len(k.name) + 16
		if cx+need > x+width {
			cx, y = x, y+18
		}
		switch {
		case k.line && k.dash:
			fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="1.5" stroke-dasharray="5 3"/>`, cx, y-4, cx+18, y-4, k.color)
		case k.line:
			fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>`, cx, y-4, cx+18, y-4, k.color)
		default:
			fmt.Fprintf(w, `<rect x="%d" y="%d" width="18" height="10" fill="%s" stroke="#888" stroke-width="0.5"/>`, cx, y-9, k.color)
		}
		fmt.Fprintf(w, `<text x="%d" y="%d">%s</text>`+"\n", cx+22, y, esc(k.name))
		cx += need
	}
	return y
}

// timeEnd is where the time axis ends: a little after the last moment
// anything changed in any run, rounded up to a tick.
func timeEnd(results []Result) float64 {
	last := 0.0
	for _, r := range results {
		for i, s := range r.Timeline {
			if i == 0 || !sameSample(s, r.Timeline[i-1]) {
				last = math.Max(last, s.MS)
			}
		}
	}
	end := math.Max(last*1.08, 10)
	step := niceStep(end, 5)
	return math.Ceil(end/step) * step
}

func sameSample(a, b Sample) bool {
	return a.Queue == b.Queue && a.Capacity == b.Capacity && a.Counts == b.Counts
}

// queueMax is the top of the queue scale: the largest queue or capacity
// of any run, with room above it, rounded up to a tick.
func queueMax(results []Result) float64 {
	top := 1.0
	for _, r := range results {
		top = math.Max(top, float64(r.Capacity))
		for _, s := range r.Timeline {
			top = math.Max(top, float64(max(s.Queue, s.Capacity)))
		}
	}
	top *= 1.2
	step := niceStep(top, 4)
	return math.Ceil(top/step) * step
}

// niceStep is a round step (1, 2 or 5 times a power of ten) that cuts
// span into about n parts.
func niceStep(span float64, n int) float64 {
	raw := span / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// panel draws one run at (x, y), the top left corner of its queue plot.
func panel(w io.Writer, x, y, panelW int, r Result, tEnd, qMax float64) {
	p := r.Config.Personality
	verdict := ""
	if p.Name != "" {
		verdict = "; when full: " + p.FullVerdict()
	}
	fmt.Fprintf(w, `<text x="%d" y="%d" font-size="12.5" font-weight="bold">%s</text>`+"\n", x, y-18, esc(r.Personality))
	fmt.Fprintf(w, `<text x="%d" y="%d" fill="#444">%s</text>`+"\n", x, y-5,
		esc(fmt.Sprintf("listen(%d): backlog %d, %d can wait%s", r.RequestedBacklog, r.Backlog, r.Capacity, verdict)))

	tx := func(ms float64) float64 { return float64(x) + math.Min(ms/tEnd, 1)*float64(panelW) }

	// The queue.
	qy := func(q float64) float64 { return float64(y) + (1-q/qMax)*queueH }
	fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d" fill="#FAFAFA"/>`+"\n", x, y, panelW, queueH)
	step := niceStep(qMax, 4)
	for v := 0.0; v <= qMax+step/100; v += step {
		yy := qy(v)
		fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e4e4e4"/><text x="%d" y="%.1f" text-anchor="end" fill="#444">%g</text>`+"\n",
			x, yy, x+panelW, yy, x-5, yy+4, v)
	}
	fmt.Fprintf(w, `<text transform="translate(%d %d) rotate(-90)" text-anchor="middle" fill="#444">queue</text>`+"\n", x-30, y+queueH/2)
	if len(r.Timeline) > 0 {
		var q, c strings.Builder
		for i, s := range r.Timeline {
			if i > 0 {
				prev := r.Timeline[i-1]
				fmt.Fprintf(&q, "%.1f,%.1f ", tx(s.MS), qy(float64(prev.Queue)))
				fmt.Fprintf(&c, "%.1f,%.1f ", tx(s.MS), qy(float64(prev.Capacity)))
			}
			fmt.Fprintf(&q, "%.1f,%.1f ", tx(s.MS), qy(float64(s.Queue)))
			fmt.Fprintf(&c, "%.1f,%.1f ", tx(s.MS), qy(float64(s.Capacity)))
		}
		last := r.Timeline[len(r.Timeline)-1]
		fmt.Fprintf(&q, "%.1f,%.1f", tx(tEnd), qy(float64(last.Queue)))
		fmt.Fprintf(&c, "%.1f,%.1f", tx(tEnd), qy(float64(last.Capacity)))
		fmt.Fprintf(w, `<polyline fill="none" stroke="%s" stroke-width="1.5" stroke-dasharray="5 3" points="%s"><title>%s</title></polyline>`+"\n",
			capacityColor, c.String(), esc(r.Personality+" capacity"))
		fmt.Fprintf(w, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"><title>%s</title></polyline>`+"\n",
			queueColor, q.String(), esc(r.Personality+" queue"))
		fmt.Fprintf(w, `<text x="%d" y="%.1f" text-anchor="end" fill="%s">can wait %d</text>`+"\n", x+panelW-4, qy(float64(last.Capacity))-4, capacityColor, last.Capacity)
	}
	fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#666"/>`+"\n", x, y, panelW, queueH)

	// The clients, stacked by outcome.
	cy0 := y + queueH + gapH
	fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d" fill="#F2F2F2"/>`+"\n", x, cy0, panelW, clientH)
	cy := func(share float64) float64 { return float64(cy0) + (1-share)*clientH }
	if len(r.Timeline) > 0 && r.Clients > 0 {
		for band := range outcomes {
			// The band lies between the sum of the bands below it and
			// that sum with its own count.
			below := func(s Sample) int {
				n := 0
				for _, o := range outcomes[:band] {
					n += o.count(s.Counts)
				}
				return n
			}
			var top, bottom []string
			for i, s := range r.Timeline {
				lo := float64(below(s)) / float64(r.Clients)
				hi := lo + float64(outcomes[band].count(s.Counts))/float64(r.Clients)
				x0 := tx(s.MS)
				x1 := tx(tEnd)
				if i+1 < len(r.Timeline) {
					x1 = tx(r.Timeline[i+1].MS)
				}
				top = append(top, fmt.Sprintf("%.1f,%.1f %.1f,%.1f", x0, cy(hi), x1, cy(hi)))
				bottom = append(bottom, fmt.Sprintf("%.1f,%.1f %.1f,%.1f", x1, cy(lo), x0, cy(lo)))
			}
			for i, j := 0, len(bottom)-1; i < j; i, j = i+1, j-1 {
				bottom[i], bottom[j] = bottom[j], bottom[i]
			}
			fmt.Fprintf(w, `<polygon fill="%s" stroke="none" points="%s %s"><title>%s</title></polygon>`+"\n",
				outcomes[band].color, strings.Join(top, " "), strings.Join(bottom, " "), esc(r.Personality+" "+outcomes[band].name))
		}
	}
	for _, v := range []float64{0, 0.5, 1} {
		fmt.Fprintf(w, `<text x="%d" y="%.1f" text-anchor="end" fill="#444">%g%%</text>`+"\n", x-5, cy(v)+4, v*100)
	}
	fmt.Fprintf(w, `<text transform="translate(%d %d) rotate(-90)" text-anchor="middle" fill="#444">clients</text>`+"\n", x-30, cy0+clientH/2)
	fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#666"/>`+"\n", x, cy0, panelW, clientH)

	// The time axis, and what the clients met in the end.
	step = niceStep(tEnd, 5)
	base := cy0 + clientH
	for v := 0.0; v <= tEnd+step/100; v += step {
		fmt.Fprintf(w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#666"/><text x="%.1f" y="%d" text-anchor="middle" fill="#444">%s</text>`+"\n",
			tx(v), base, tx(v), base+4, tx(v), base+15, timeLabel(v, step))
	}
	fmt.Fprintf(w, `<text x="%d" y="%d" fill="#222">%s</text>`+"\n", x, base+29, esc(finalCounts(r)))
}

// timeLabel prints a tick in ms below a second's steps, else in s.
func timeLabel(ms, step float64) string {
	if step < 1000 {
		if ms == 0 {
			return "0"
		}
		return fmt.Sprintf("%g ms", ms)
	}
	return fmt.Sprintf("%g s", ms/1000)
}

// finalCounts is what the run's clients met in the end, the outcomes that
// happened only.
func finalCounts(r Result) string {
	parts := []string{fmt.Sprintf("%d clients:", r.Clients)}
	add := func(n int, what string) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(r.Connected, "connected")
	add(r.Accepted, "accepted")
	add(r.Reset, "reset")
	add(r.Refused, "refused")
	add(r.TimedOut, "timed out")
	add(r.Failed, "failed")
	add(r.Unfinished, "unfinished")
	return parts[0] + " " + strings.Join(parts[1:], ", ")
}
