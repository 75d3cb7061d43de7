package cli

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/lab"
)

// isTerminal reports whether w is a terminal, where output may be redrawn
// in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progressView shows runs going on, on stderr: on a terminal, a table
// redrawn in place within the terminal's width (read again at each
// redraw, so that a resized window is followed); otherwise a plain line
// per run every half second and when it ends.
type progressView struct {
	w     io.Writer
	live  bool
	names []string
	what  string // the first column's name

	mu    sync.Mutex
	rows  []lab.Progress
	drawn int // lines of the live table on screen
	last  time.Time
	said  []time.Time
}

func newProgressView(e *env, ps []backlog.Personality) *progressView {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.String()
	}
	return newProgress(e, "SYSTEM", names)
}

func newProgress(e *env, what string, names []string) *progressView {
	v := &progressView{w: e.stderr, names: names, what: what, rows: make([]lab.Progress, len(names)), said: make([]time.Time, len(names))}
	v.live = isTerminal(e.stderr)
	return v
}

func (v *progressView) update(i int, p lab.Progress) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.rows[i] = p
	if v.live {
		if time.Since(v.last) >= 100*time.Millisecond || p.Done {
			v.redraw()
		}
		return
	}
	if p.Done || time.Since(v.said[i]) >= 500*time.Millisecond {
		v.said[i] = time.Now()
		fmt.Fprintln(v.w, progressLine(v.names[i], p))
	}
}

// progressLine is a run's state on one line, for a log:
// "linux: running at 1.1s: 6/18 answered; connected 6, refused 0, reset 0,
// timed out 0; queue 6/6".
func progressLine(name string, p lab.Progress) string {
	state := "running"
	if p.Done {
		state = "done"
	}
	line := fmt.Sprintf("%s: %s at %.1fs: %d/%d answered; connected %d, refused %d, reset %d, timed out %d",
		name, state, p.Elapsed.Seconds(), p.Answered(), p.Clients, p.Connected, p.Refused, p.Reset, p.TimedOut)
	if p.Failed > 0 {
		line += fmt.Sprintf(", failed %d", p.Failed)
	}
	if p.Unfinished > 0 {
		line += fmt.Sprintf(", unfinished %d", p.Unfinished)
	}
	if p.Capacity > 0 {
		line += fmt.Sprintf("; queue %d/%d", p.Queue, p.Capacity)
	}
	return line
}

// redraw draws every run as a row of a table with a bar of the clients
// answered, over the table drawn last. The bar takes what room the
// columns leave, 10 to 40 cells; it is the first to go on a narrow
// terminal. Lines stay a column short of the width, so that none wraps.
func (v *progressView) redraw() {
	v.last = time.Now()
	width := outputWidth(v.w) - 1
	build := func(bar int) *table {
		t := &table{cols: []column{
			{name: v.what}, {name: "PROGRESS", drop: 4}, {name: "ANSWERED", right: true, drop: 3},
			{name: "CONNECTED", right: true}, {name: "REFUSED", right: true}, {name: "RESET", right: true, drop: 2},
			{name: "TIMED OUT", right: true}, {name: "QUEUE", right: true, drop: 1},
		}}
		for i, p := range v.rows {
			queue := "-"
			if p.Capacity > 0 {
				queue = fmt.Sprintf("%d/%d", p.Queue, p.Capacity)
			}
			t.add(v.names[i], progressBar(p, bar), fmt.Sprintf("%d/%d", p.Answered(), p.Clients), strconv.Itoa(p.Connected),
				strconv.Itoa(p.Refused), strconv.Itoa(p.Reset), strconv.Itoa(p.TimedOut), queue)
		}
		return t
	}
	lines, left := build(10).render(width)
	if len(left) == 0 {
		used := 0
		for _, l := range lines {
			used = max(used, runeLen(l))
		}
		if extra := min(30, width-used); extra > 0 {
			lines, _ = build(10 + extra).render(width)
		}
	}
	var b strings.Builder
	if v.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", v.drawn)
	}
	for _, l := range lines {
		b.WriteString("\r\x1b[2K" + l + "\n")
	}
	io.WriteString(v.w, b.String())
	v.drawn = len(lines)
}

func progressBar(p lab.Progress, width int) string {
	filled := 0
	if p.Clients > 0 {
		filled = (p.Answered() + p.Unfinished) * width / p.Clients
	}
	return strings.Repeat("█", filled) + strings.Repeat("·", width-filled)
}

// finish draws the live table a last time, leaving the terminal to the
// summary below it.
func (v *progressView) finish() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.live && v.drawn > 0 {
		v.redraw()
		fmt.Fprintln(v.w)
	}
}
