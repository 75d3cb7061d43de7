package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/backlog-dev/backlog/internal/lab"
)

// isTerminal reports whether w is a terminal, where output may be redrawn
// in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progressView shows runs going on, on stderr: on a terminal, a table
// redrawn in place; otherwise a plain line per run every half second and
// when it ends.
type progressView struct {
	w    io.Writer
	live bool

	mu    sync.Mutex
	rows  []lab.Progress
	drawn int // lines of the live table on screen
	last  time.Time
	said  []time.Time
}

func newProgressView(e *env, runs int) *progressView {
	v := &progressView{w: e.stderr, rows: make([]lab.Progress, runs), said: make([]time.Time, runs)}
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
		fmt.Fprintln(v.w, progressLine(p))
	}
}

func progressLine(p lab.Progress) string {
	state := "running"
	if p.Done {
		state = "done"
	}
	return fmt.Sprintf("%s: %s at %.1fs: %d/%d clients answered; connected %d, accepted %d, refused %d, reset %d, timed out %d; queue %d",
		p.Personality, state, p.Elapsed.Seconds(), p.Connected+p.Refused+p.TimedOut, p.Clients,
		p.Connected, p.Accepted, p.Refused, p.Reset, p.TimedOut, p.Queue)
}

// redraw draws every run as a row with a bar of clients answered.
func (v *progressView) redraw() {
	v.last = time.Now()
	if v.drawn > 0 {
		fmt.Fprintf(v.w, "\x1b[%dA", v.drawn)
	}
	for _, p := range v.rows {
		const width = 20
		done := p.Connected + p.Refused + p.TimedOut
		filled := 0
		if p.Clients > 0 {
			filled = done * width / p.Clients
		}
		bar := strings.Repeat("█", filled) + strings.Repeat("·", width-filled)
		fmt.Fprintf(v.w, "\x1b[2K%-20s %s %4d/%-4d connected %-4d refused %-4d timed out %-4d queue %d\n",
			p.Personality, bar, done, p.Clients, p.Connected, p.Refused, p.TimedOut, p.Queue)
	}
	v.drawn = len(v.rows)
}

// finish clears the live table, leaving the terminal to the summary.
func (v *progressView) finish() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.live && v.drawn > 0 {
		v.redraw()
		fmt.Fprintln(v.w)
	}
}
