package cli

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/backlog-dev/backlog/internal/transport"

	"golang.org/x/term"

	"github.com/backlog-dev/backlog/kernel"
)

// topFlags holds the flags of one top command.
type topFlags struct {
	interval  time.Duration
	once      bool
	json      bool
	ports     []uint16
	processes []string
	limit     int
}

func topCommand() (*flags, runFunc) {
	fl := newFlags("top", "[flags]", `
Shows every listening TCP socket of this host (of its network namespace),
whichever process holds it: the local address, the process, how many
connections wait for accept() (QUEUE), the stored backlog, how full the
queue is (FULL: the queue over what can wait, backlog+1 on Linux), the
handshakes waiting for their final ACK (SYN-Q), the socket's drops
(sk_drops) and how fast they rise (per second, between two readings). The
members of an SO_REUSEPORT group stand together, followed by a line with
their imbalance (the fullest member's FULL minus the emptiest's) and the
group's SYN queue, which the kernel does not split among them. The fullest
queues come first; ties go to the most drops, then by port and address.
The header has the host's counters from /proc/net/netstat with their
rates. Processes of other users show as "-" unless run as root; control
characters in their names are shown escaped (\x1b). On a terminal the view
is redrawn every interval, fitted to its width and height, until
interrupted; otherwise a table is printed every interval. Interrupted,
top leaves the last view on screen and exits with status 130. Linux only.`)
	var f topFlags
	fl.durationFlag(&f.interval, "interval", "time between readings", time.Second, 10*time.Millisecond, time.Hour)
	fl.switchFlag(&f.once, "once", "print one table and exit: the second of two readings --interval apart, so that the rates are known")
	fl.switchFlag(&f.json, "json", "with --once: print a JSON array, one object per socket (local, pid, process, uid, inode, queued_now, backlog, capacity, full, syn_queue, syn_retransmitted, drops, queued_now_per_s, drops_per_s, group, group_imbalance)")
	fl.add("port", "N", "only sockets on this local port (repeatable)", "", portListValue{&f.ports})
	fl.add("process", "NAME", "only sockets of processes with this name, as ps -o comm shows it (repeatable)", "", stringListValue{&f.processes})
	fl.intFlag(&f.limit, "limit", "N", "show at most N sockets; 0: all, or on a terminal as many as fit", 0, 0, 1<<20, "a number of sockets")
	return fl, func(ctx context.Context, e *env, args []string) error {
		if err := fl.onlyFlags(args); err != nil {
			return err
		}
		if f.json && !f.once {
			return fl.invalid("json", "needs --once: it prints one snapshot")
		}
		return runTop(ctx, e, f)
	}
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
// GroupImbalance is nil for a socket alone on its address.
type topRow struct {
	Local            string   `json:"local"`
	DualStack        bool     `json:"dual_stack"`
	PID              int      `json:"pid"`
	Process          string   `json:"process"`
	UID              uint32   `json:"uid"`
	Inode            uint64   `json:"inode"`
	Queue            int      `json:"queued_now"`
	Backlog          int      `json:"backlog"`
	Capacity         int      `json:"capacity"`
	Full             float64  `json:"full"`
	SynQueue         int      `json:"syn_queue"`
	SynRetransmitted int      `json:"syn_retransmitted"`
	Drops            uint64   `json:"drops"`
	QueueRate        *float64 `json:"queued_now_per_s"`
	DropRate         *float64 `json:"drops_per_s"`
	Group            int      `json:"group"`
	GroupImbalance   *float64 `json:"group_imbalance"`

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
// The members of an SO_REUSEPORT group come together, ordered by inode,
// where their fullest member would come.
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
	groups := map[string][]kernel.Socket{}
	for _, s := range cur.sockets {
		groups[s.Key()] = append(groups[s.Key()], s)
	}
	rows := []topRow{}
	for _, s := range cur.sockets {
		if !f.keep(s) {
			continue
		}
		r := topRow{
			Local: s.String(), DualStack: s.DualStack, PID: s.PID, Process: s.Process, UID: s.UID,
			Inode: s.Inode, Queue: s.Len, Backlog: s.Backlog, Capacity: capacityOf(s.Backlog),
			SynQueue: s.SynQueue, SynRetransmitted: s.SynRetransmitted, Drops: s.Drops,
			Group: max(s.Group, 1), port: s.Addr.Port(),
		}
		r.Full = fullness(r.Queue, r.Capacity)
		if g := groups[s.Key()]; len(g) > 1 {
			im := kernel.Imbalance(g)
			r.GroupImbalance = &im
		}
		if p, ok := before[s.Inode]; ok && dt > 0 && s.Drops >= p.Drops {
			q := float64(s.Len-p.Len) / dt
			d := float64(s.Drops-p.Drops) / dt
			r.QueueRate, r.DropRate = &q, &d
		}
		rows = append(rows, r)
	}
	// A group sorts as its fullest member, with the most drops.
	lead := map[string]topRow{}
	for _, r := range rows {
		l, ok := lead[r.Local]
		if !ok || r.Full > l.Full || (r.Full == l.Full && r.Drops > l.Drops) {
			lead[r.Local] = r
		}
	}
	// cur.sockets is in port, address, inode order: a stable sort keeps
	// it for ties, and so the members of a group by inode.
	slices.SortStableFunc(rows, func(a, b topRow) int {
		la, lb := lead[a.Local], lead[b.Local]
		if c := cmp.Compare(lb.Full, la.Full); c != 0 {
			return c
		}
		if c := cmp.Compare(lb.Drops, la.Drops); c != 0 {
			return c
		}
		if c := cmp.Compare(la.port, lb.port); c != 0 {
			return c
		}
		return cmp.Compare(a.Local, b.Local)
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

func runTop(ctx context.Context, e *env, f topFlags) error {
	filter := topFilter{ports: map[uint16]bool{}, processes: map[string]bool{}}
	for _, p := range f.ports {
		filter.ports[p] = true
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
		cur := prev
		last := &prev
		interrupted := !sleepCtx(ctx, f.interval)
		if interrupted {
			// The partial summary: the one reading there is, without
			// rates.
			last = nil
		} else if cur, err = readTop(); err != nil {
			return err
		}
		all := topRows(last, cur, filter, capacityOf)
		if f.json {
			err = writeJSON(e, limitRows(all, f.limit))
		} else {
			err = writeTop(e.stdout, last, cur, all, f.limit, topLayout{})
		}
		if err == nil && interrupted {
			err = errInterrupted
		}
		return err
	}

	live := isTerminal(e.stdout)
	var last *topReading
	cur := prev
	if live {
		// Hide the cursor while the view is redrawn; on the way out,
		// show it again below the last view.
		fmt.Fprint(e.stdout, "\x1b[?25l")
		defer fmt.Fprint(e.stdout, "\x1b[?25h\n")
	}
	for {
		all := topRows(last, cur, filter, capacityOf)
		var buf bytes.Buffer
		var layout topLayout
		if live {
			layout = screenLayout(e.stdout)
			// Home the cursor, draw over what is there, clear the rest.
			buf.WriteString("\x1b[H")
			fmt.Fprintf(&buf, "backlog top: every %s; Ctrl-C quits\n", f.interval)
			layout.height--
		} else if last != nil {
			buf.WriteByte('\n')
		}
		if err := writeTop(&buf, last, cur, all, f.limit, layout); err != nil {
			return err
		}
		out := buf.Bytes()
		if live {
			out = bytes.ReplaceAll(out, []byte("\n"), []byte("\x1b[K\n"))
			out = append(out, "\x1b[J"...)
		}
		if _, err := e.stdout.Write(out); err != nil {
			return err
		}
		if !sleepCtx(ctx, f.interval) {
			return errInterrupted
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

// topLayout is the room a view has: width in columns and height in lines,
// 0 for no bound.
type topLayout struct {
	width, height int
}

// screenLayout is the room of the terminal w is.
func screenLayout(w io.Writer) topLayout {
	width, height, err := term.GetSize(int(w.(*os.File).Fd()))
	if err != nil {
		return topLayout{}
	}
	return topLayout{width: width, height: height}
}

// sleepCtx waits d and reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// writeTop writes the host's counters, then the rows, at most limit of
// them (0: all), within the layout: a line never wider than its width
// (the widest columns, the process and the address, give way first), and
// with a height, as many rows as fit, one line kept free below the view
// for the cursor.
func writeTop(w io.Writer, prev *topReading, cur topReading, all []topRow, limit int, layout topLayout) error {
	var head []string
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
		head = append(head, counter("ListenOverflows", c.ListenOverflows, d.ListenOverflows)+"  "+
			counter("ListenDrops", c.ListenDrops, d.ListenDrops))
		head = append(head, counter("SyncookiesSent", c.SyncookiesSent, d.SyncookiesSent)+"  "+
			fmt.Sprintf("%d of %d listening sockets", len(all), len(cur.sockets)))
	} else {
		head = append(head, fmt.Sprintf("%d of %d listening sockets", len(all), len(cur.sockets)))
	}
	rows := limitRows(all, limit)
	// Lines: the head, the column names, the rows with their group
	// lines, "… N more", and one free for the cursor.
	if layout.height > 0 {
		room := max(1, layout.height-len(head)-3)
		rows = fitRows(rows, room)
	}
	t := topTable(rows, layout.width)
	lines := append(head, t...)
	if len(rows) < len(all) {
		lines = append(lines, fmt.Sprintf("… %d more", len(all)-len(rows)))
	}
	var b bytes.Buffer
	for _, l := range lines {
		if layout.width > 0 {
			l = truncate(l, layout.width)
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	_, err := w.Write(b.Bytes())
	return err
}

// fitRows keeps the rows that fit in room lines, with the line that
// follows each group.
func fitRows(rows []topRow, room int) []topRow {
	used := 0
	for i, r := range rows {
		need := 1
		if r.Group > 1 && (i+1 == len(rows) || rows[i+1].Local != r.Local) {
			need++
		}
		if used+need > room {
			return rows[:i]
		}
		used += need
	}
	return rows
}

// topColumns are the table's columns; right-aligned ones hold numbers.
var topColumns = []struct {
	name  string
	right bool
	min   int // the narrowest it may be cut to
}{
	{"LOCAL", false, 12}, {"PID", true, 3}, {"PROCESS", false, 6}, {"QUEUE", true, 5}, {"BACKLOG", true, 7},
	{"FULL", true, 4}, {"SYN-Q", true, 5}, {"DROPS", true, 5}, {"DROPS/S", true, 7},
}

// topTable lays the rows out in columns, each group followed by a line
// that says what the group shares, narrowed to width if it is not 0.
func topTable(rows []topRow, width int) []string {
	cells := [][]string{}
	groupLine := map[int]string{}
	for i, r := range rows {
		pid, process := "-", "-"
		if r.PID != 0 {
			pid = strconv.Itoa(r.PID)
		}
		if r.Process != "" {
			process = escapeControl(r.Process)
		}
		syn := strconv.Itoa(r.SynQueue)
		if r.Group > 1 {
			syn = "-" // the group's, on the line below
			if i+1 == len(rows) || rows[i+1].Local != r.Local {
				groupLine[len(cells)] = fmt.Sprintf("  └ reuseport group of %d: imbalance %.0f%%, SYN-Q %d", r.Group, 100*deref(r.GroupImbalance), r.SynQueue)
			}
		}
		cells = append(cells, []string{r.Local, pid, process, strconv.Itoa(r.Queue), strconv.Itoa(r.Backlog),
			fmt.Sprintf("%.0f%%", 100*r.Full), syn, strconv.FormatUint(r.Drops, 10), rate(r.DropRate)})
	}
	widths := make([]int, len(topColumns))
	for i, c := range topColumns {
		widths[i] = runeLen(c.name)
		for _, row := range cells {
			widths[i] = max(widths[i], runeLen(row[i]))
		}
	}
	if width > 0 {
		narrowTable(widths, width)
	}
	format := func(row []string) string {
		var b strings.Builder
		for i, c := range topColumns {
			if i > 0 {
				b.WriteString("  ")
			}
			v := truncate(row[i], widths[i])
			if i == 0 {
				v = truncateAddr(row[i], widths[i])
			}
			pad := strings.Repeat(" ", widths[i]-runeLen(v))
			if c.right {
				b.WriteString(pad + v)
			} else if i < len(topColumns)-1 {
				b.WriteString(v + pad)
			} else {
				b.WriteString(v)
			}
		}
		return strings.TrimRight(b.String(), " ")
	}
	names := make([]string, len(topColumns))
	for i, c := range topColumns {
		names[i] = c.name
	}
	out := []string{format(names)}
	for i, row := range cells {
		out = append(out, format(row))
		if g, ok := groupLine[i]; ok {
			out = append(out, g)
		}
	}
	return out
}

// narrowTable cuts the widest text columns down, no further than their
// minimum, until a line of the given widths fits width.
func narrowTable(widths []int, width int) {
	total := func() int {
		n := 2 * (len(widths) - 1)
		for _, w := range widths {
			n += w
		}
		return n
	}
	for _, i := range []int{2, 0} { // PROCESS, then LOCAL
		if over := total() - width; over > 0 {
			widths[i] = max(topColumns[i].min, widths[i]-over)
		}
	}
}

func deref(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}

func rate(r *float64) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%+.1f", *r)
}

func runeLen(s string) int { return utf8.RuneCountInString(s) }

// truncate cuts s to n runes, marking the cut with "…".
func truncate(s string, n int) string {
	if runeLen(s) <= n {
		return s
	}
	if n <= 1 {
		return string([]rune(s)[:max(n, 0)])
	}
	return string([]rune(s)[:n-1]) + "…"
}

// truncateAddr cuts an address to n runes as truncate does, but in the
// host part, keeping the port: "[2001:db8:…]:443" becomes
// "[2001:d…:443".
func truncateAddr(s string, n int) string {
	i := strings.LastIndexByte(s, ':')
	if runeLen(s) <= n || i < 0 || runeLen(s[i:])+2 > n {
		return truncate(s, n)
	}
	port := s[i:]
	return truncate(s[:i], n-runeLen(port)) + port
}

// escapeControl returns s with everything that is not a printable
// character escaped, so that a process name (which any user sets, with
// prctl PR_SET_NAME) cannot move the cursor, clear the screen or reorder
// the text of root's terminal: control characters and invalid bytes as
// \xNN, format characters such as the bidirectional overrides as \uNNNN,
// and the backslash itself as \\.
func escapeControl(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case r < 0x80 && !unicode.IsPrint(r):
			fmt.Fprintf(&b, "\\x%02x", r)
		case !unicode.IsPrint(r):
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteRune(r)
		}
		i += size
	}
	return b.String()
}
