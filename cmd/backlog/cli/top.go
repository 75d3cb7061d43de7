package cli

import (
	"bytes"
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/backlog-dev/backlog/internal/transport"

	"golang.org/x/term"

	"github.com/backlog-dev/backlog/kernel"
)

const topUsage = `Usage: backlog top [flags]

Shows every listening TCP socket of this host (of its network namespace),
whichever process holds it: the local address, the process, how many
connections wait for accept() (QUEUE), the stored backlog, how full the
queue is (FULL: the queue over what can wait, backlog+1 on Linux), the
socket's drops, and how fast the queue and the drops change (per second,
between two readings). The fullest queues come first; ties go to the most
drops, then by port and address. The header has the host's counters from
/proc/net/netstat with their rates. Processes of other users show as "-"
unless run as root. On a terminal the view is redrawn every interval until
interrupted; otherwise a table is printed every interval. Linux only.

  --interval D     time between readings (default 1s; 10ms to 1h)
  --once           print one table and exit: the second of two readings
                   --interval apart, so that the rates are known
  --json           with --once: print a JSON array, one object per socket
                   (local, pid, process, uid, inode, queue, backlog,
                   capacity, full, drops, queue_per_s, drops_per_s)
  --port N         only sockets on this local port (repeatable)
  --process NAME   only sockets of processes with this name, as ps -o comm
                   shows it (repeatable)
  --limit N        show at most N sockets (default 0: all, or on a
                   terminal as many as fit)
`

// topFlags holds the flags of one top command.
type topFlags struct {
	interval  time.Duration
	once      bool
	json      bool
	ports     listFlag
	processes listFlag
	limit     int
}

// topReading is one look at the host: its listening sockets and counters.
type topReading struct {
	at          time.Time
	sockets     []kernel.Socket
	counters    kernel.Counters
	countersErr error
}

func readTop() (topReading, error) {
	r := topReading{at: time.Now()}
	var err error
	if r.sockets, err = kernel.Sockets(); err != nil {
		return r, err
	}
	r.counters, r.countersErr = kernel.ReadCounters()
	return r, nil
}

// topRow is one socket as top shows it. The rates are nil on a first
// reading, and for a socket the previous reading did not have.
type topRow struct {
	Local     string   `json:"local"`
	DualStack bool     `json:"dual_stack"`
	PID       int      `json:"pid"`
	Process   string   `json:"process"`
	UID       uint32   `json:"uid"`
	Inode     uint64   `json:"inode"`
	Queue     int      `json:"queue"`
	Backlog   int      `json:"backlog"`
	Capacity  int      `json:"capacity"`
	Full      float64  `json:"full"`
	Drops     uint64   `json:"drops"`
	QueueRate *float64 `json:"queue_per_s"`
	DropRate  *float64 `json:"drops_per_s"`

	port uint16
}

// topFilter keeps the sockets the --port and --process flags ask for.
type topFilter struct {
	ports     map[uint16]bool
	processes map[string]bool
}

func (f topFilter) keep(s kernel.Socket) bool {
	return (len(f.ports) == 0 || f.ports[s.Addr.Port()]) && (len(f.processes) == 0 || f.processes[s.Process])
}

// topRows turns a reading into rows, sorted, with the rates since prev
// (nil for none). capacityOf is the host's rule for how many can wait.
func topRows(prev *topReading, cur topReading, f topFilter, capacityOf func(int) int) []topRow {
	var before map[uint64]kernel.Socket
	var dt float64
	if prev != nil {
		dt = cur.at.Sub(prev.at).Seconds()
		before = make(map[uint64]kernel.Socket, len(prev.sockets))
		for _, s := range prev.sockets {
			before[s.Inode] = s
		}
	}
	rows := []topRow{}
	for _, s := range cur.sockets {
		if !f.keep(s) {
			continue
		}
		r := topRow{
			Local: s.String(), DualStack: s.DualStack, PID: s.PID, Process: s.Process, UID: s.UID,
			Inode: s.Inode, Queue: s.Len, Backlog: s.Backlog, Capacity: capacityOf(s.Backlog),
			Drops: s.Drops, port: s.Addr.Port(),
		}
		r.Full = fullness(r.Queue, r.Capacity)
		if p, ok := before[s.Inode]; ok && dt > 0 && s.Drops >= p.Drops {
			q := float64(s.Len-p.Len) / dt
			d := float64(s.Drops-p.Drops) / dt
			r.QueueRate, r.DropRate = &q, &d
		}
		rows = append(rows, r)
	}
	// cur.sockets is in port, address order: a stable sort keeps it for
	// ties.
	slices.SortStableFunc(rows, func(a, b topRow) int {
		if c := cmp.Compare(b.Full, a.Full); c != 0 {
			return c
		}
		return cmp.Compare(b.Drops, a.Drops)
	})
	return rows
}

// fullness is queue over capacity; a queue with no room at all is as full
// as can be.
func fullness(queue, capacity int) float64 {
	if capacity <= 0 {
		if queue > 0 {
			return float64(queue)
		}
		return 0
	}
	return float64(queue) / float64(capacity)
}

func runTop(ctx context.Context, e *env, args []string) error {
	var f topFlags
	fs := flag.NewFlagSet("top", flag.ContinueOnError)
	fs.DurationVar(&f.interval, "interval", time.Second, "")
	fs.BoolVar(&f.once, "once", false, "")
	fs.BoolVar(&f.json, "json", false, "")
	fs.Var(&f.ports, "port", "")
	fs.Var(&f.processes, "process", "")
	fs.IntVar(&f.limit, "limit", 0, "")
	rest, err := parseFlags(e, fs, topUsage, args)
	if err != nil {
		return helpIsNotAnError(err)
	}
	switch {
	case len(rest) > 0:
		return usagef("top", "unexpected argument %q; top takes only flags", rest[0])
	case f.interval < 10*time.Millisecond || f.interval > time.Hour:
		return usagef("top", "--interval must be from 10ms to 1h")
	case f.json && !f.once:
		return usagef("top", "--json needs --once: it prints one snapshot")
	case f.limit < 0:
		return usagef("top", "--limit must be 0 (all) or more")
	}
	filter := topFilter{ports: map[uint16]bool{}, processes: map[string]bool{}}
	for _, p := range f.ports {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return usagef("top", "--port %q: give a port from 1 to 65535", p)
		}
		filter.ports[uint16(n)] = true
	}
	for _, p := range f.processes {
		filter.processes[p] = true
	}
	capacityOf := transport.Host().CapacityOf

	prev, err := readTop()
	if err != nil {
		return err
	}
	if f.once {
		if !sleepCtx(ctx, f.interval) {
			return ctx.Err()
		}
		cur, err := readTop()
		if err != nil {
			return err
		}
		all := topRows(&prev, cur, filter, capacityOf)
		if f.json {
			return writeJSON(e, limitRows(all, f.limit))
		}
		return writeTop(e.stdout, &prev, cur, limitRows(all, f.limit), len(all))
	}

	live := isTerminal(e.stdout)
	var last *topReading
	cur := prev
	for {
		all := topRows(last, cur, filter, capacityOf)
		limit := f.limit
		if live {
			limit = fitScreen(e.stdout, limit)
		}
		var buf bytes.Buffer
		if live {
			// Home the cursor, clear the screen, draw.
			fmt.Fprintf(&buf, "\x1b[H\x1b[2Jbacklog top: every %s; Ctrl-C quits\n", f.interval)
		} else if last != nil {
			buf.WriteByte('\n')
		}
		if err := writeTop(&buf, last, cur, limitRows(all, limit), len(all)); err != nil {
			return err
		}
		if _, err := e.stdout.Write(buf.Bytes()); err != nil {
			return err
		}
		if !sleepCtx(ctx, f.interval) {
			return nil
		}
		r, err := readTop()
		if err != nil {
			return err
		}
		prev = cur
		last, cur = &prev, r
	}
}

// limitRows keeps the first n rows; 0 keeps them all.
func limitRows(rows []topRow, n int) []topRow {
	if n > 0 && len(rows) > n {
		return rows[:n]
	}
	return rows
}

// fitScreen lowers limit to the rows a terminal has room for, below the
// title, the header, the column names and the line that says how many
// more there are.
func fitScreen(w io.Writer, limit int) int {
	_, height, err := term.GetSize(int(w.(*os.File).Fd()))
	if err != nil {
		return limit
	}
	room := max(1, height-5)
	if limit == 0 || limit > room {
		return room
	}
	return limit
}

// sleepCtx waits d and reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case <-ctx.Done():
		return false
	}
}

// writeTop writes the header line with the host's counters, then the
// rows; matched is how many sockets the filters kept before --limit.
func writeTop(w io.Writer, prev *topReading, cur topReading, rows []topRow, matched int) error {
	if cur.countersErr == nil {
		c := cur.counters
		var d kernel.Counters
		var dt float64
		if prev != nil && prev.countersErr == nil {
			d, dt = c.Sub(prev.counters), cur.at.Sub(prev.at).Seconds()
		}
		counter := func(name string, v, delta uint64) string {
			if dt <= 0 {
				return fmt.Sprintf("%s %d", name, v)
			}
			return fmt.Sprintf("%s %d (%+.1f/s)", name, v, float64(delta)/dt)
		}
		fmt.Fprintf(w, "%s  %s  %s  ", counter("ListenOverflows", c.ListenOverflows, d.ListenOverflows),
			counter("ListenDrops", c.ListenDrops, d.ListenDrops), counter("SyncookiesSent", c.SyncookiesSent, d.SyncookiesSent))
	}
	fmt.Fprintf(w, "%d of %d listening sockets\n", matched, len(cur.sockets))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LOCAL\tPID\tPROCESS\tQUEUE\tBACKLOG\tFULL\tDROPS\tQUEUE/S\tDROPS/S")
	for _, r := range rows {
		pid, process := "-", r.Process
		if r.PID != 0 {
			pid = strconv.Itoa(r.PID)
		}
		if process == "" {
			process = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%.0f%%\t%d\t%s\t%s\n", r.Local, pid, process, r.Queue, r.Backlog,
			100*r.Full, r.Drops, rate(r.QueueRate), rate(r.DropRate))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rows) < matched {
		_, err := fmt.Fprintf(w, "… %d more\n", matched-len(rows))
		return err
	}
	return nil
}

func rate(r *float64) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%+.1f", *r)
}
