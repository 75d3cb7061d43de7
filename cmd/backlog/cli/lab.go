package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/lab"
	"github.com/backlog-dev/backlog/internal/transport"
)

// labFlags holds the flags of one lab command.
type labFlags struct {
	personalities []backlog.Personality
	transport     string
	backlog       request
	clients       int
	arrival       time.Duration
	accept        lab.AcceptPolicy
	relisten      []lab.Relisten
	timeout       time.Duration
	json          bool
	timeline      bool
	svg           string
}

// maxClients bounds a lab's load.
const maxClients = 20000

func labCommand() (*flags, runFunc) {
	fl := newFlags("lab", "[flags]", `
Shows a listen queue at work: a listener with a system's rules, an
application that accepts at a chosen pace, and clients that connect, one
after another; then what each client met. By default everything runs in
this process on a user-space TCP/IP stack: no root, no ports on this host.
Interrupted (Ctrl-C), the lab says what had happened by then and exits with
status 130.`)
	var f labFlags
	fl.personalityFlag(&f.personalities, `the system whose rules the listener follows; "all" runs every system side by side; repeatable`, "this host's", false)
	fl.choiceFlag(&f.transport, "transport", "T", "netstack: in this process; kernel: this host's kernel, on loopback, emulating a system that is not the host's", transport.Netstack, transport.Netstack, transport.Kernel)
	fl.backlogFlag(&f.backlog, "backlog", "the backlog passed to listen(): an integer, SOMAXCONN or SOMAXCONN_HINT(N)", 5)
	fl.add("clients", "N", fmt.Sprintf("how many clients connect, 1 to %d", maxClients), "3 × what can wait", intValue{&f.clients, 1, maxClients, "a number of clients"})
	fl.durationFlag(&f.arrival, "arrival", "time between clients' starts, each after the server has dealt with the one before where it counts its drops; 0 starts them together", 2*time.Millisecond, 0, 10*time.Second)
	fl.acceptFlags(&f.accept, "none")
	fl.relistenFlag(&f.relisten)
	fl.durationFlag(&f.timeout, "timeout", "each client's connect timeout", 3*time.Second, time.Millisecond, 10*time.Minute)
	fl.switchFlag(&f.json, "json", "print the results as JSON: an array, one object per system")
	fl.switchFlag(&f.timeline, "timeline", "include the queue samples in the JSON")
	fl.add("svg", "FILE", "draw each system's queue over time and its clients' outcomes", "", pathValue{&f.svg})
	var overload bool
	fl.switchFlag(&overload, "overload", "the overload experiment instead, with flags of its own: backlog lab --overload -h")
	return fl, func(ctx context.Context, e *env, args []string) error {
		if err := fl.onlyFlags(args); err != nil {
			return err
		}
		return runLab(ctx, e, f)
	}
}

func runLab(ctx context.Context, e *env, f labFlags) error {
	ps := f.personalities
	if len(ps) == 0 {
		ps = []backlog.Personality{transport.Host()}
	}
	svg, err := createChart(f.svg)
	if err != nil {
		return err
	}
	defer svg.close()

	prog := newProgressView(e, ps)
	cfgs := make([]lab.Config, len(ps))
	for i, p := range ps {
		cfgs[i] = lab.Config{
			Personality: p, Transport: f.transport, Backlog: f.backlog.value(p), Clients: f.clients,
			Arrival: f.arrival, Accept: f.accept, Timeout: f.timeout, Relisten: f.relisten,
			Progress: func(pr lab.Progress) { prog.update(i, pr) },
		}
	}
	results, err := lab.RunAll(ctx, cfgs)
	prog.finish()
	if err != nil {
		return err
	}
	interrupted := ctx.Err() != nil
	if len(results) > 0 {
		if err := svg.draw(func(w io.Writer) error { return lab.WriteSVG(w, results, labTitle(f, results)) }); err != nil {
			return err
		}
	}
	if f.json {
		if !f.timeline {
			for i := range results {
				results[i].Timeline = nil
			}
		}
		if results == nil {
			results = []lab.Result{}
		}
		if err := writeJSON(e, results); err != nil {
			return err
		}
	} else {
		width := outputWidth(e.stdout)
		switch len(results) {
		case 0:
			fmt.Fprintln(e.stdout, "Interrupted before any run had started.")
		case 1:
			printLabResult(e.stdout, width, results[0], f, interrupted)
		default:
			printLabTable(e.stdout, width, results, f, interrupted)
		}
		if f.svg != "" && len(results) > 0 {
			fmt.Fprintf(e.stdout, "\nCharts written to %s.\n", f.svg)
		}
	}
	if interrupted {
		return errInterrupted
	}
	return nil
}

// labTitle says what was run, for the chart.
func labTitle(f labFlags, rs []lab.Result) string {
	clients := fmt.Sprintf("%d clients", rs[0].Clients)
	for _, r := range rs {
		if r.Clients != rs[0].Clients {
			clients = "clients 3 × what can wait"
		}
	}
	title := fmt.Sprintf("listen(%s) on %s, accepting %s; %s, %s apart, %s each to connect",
		f.backlog, rs[0].Transport, f.accept, clients, f.arrival, durationText(f.timeout))
	for _, r := range f.relisten {
		title += fmt.Sprintf("; listen(%d) again at %s", r.Backlog, durationText(r.After))
	}
	for _, r := range rs {
		if r.Interrupted {
			title += " (interrupted)"
			break
		}
	}
	return title
}

func printLabResult(w io.Writer, width int, r lab.Result, f labFlags, interrupted bool) {
	p := r.Config.Personality
	if interrupted {
		para(w, width, "", fmt.Sprintf("Interrupted after %s: what follows is what had happened by then.", seconds1(r.DurationMS)))
		fmt.Fprintln(w)
	}
	on := r.Transport
	if r.Emulated {
		on += " (emulated)"
	}
	para(w, width, "", fmt.Sprintf("%s, listen(%d): backlog %d, %d can wait; when full: %s",
		r.Personality, r.RequestedBacklog, r.Backlog, r.Capacity, p.FullVerdict()))
	para(w, width, "", fmt.Sprintf("on %s: %d clients %s apart, %s each to connect; accepting: %s",
		on, r.Clients, f.arrival, durationText(f.timeout), f.accept))
	if r.Emulated {
		para(w, width, "", emulationNote(p.String(), r.Emulation))
	}
	fmt.Fprintln(w)
	waiting := ""
	if r.Waiting > 0 {
		waiting = fmt.Sprintf("%d still waiting, %d of them in the server's queue", r.Waiting, r.InQueue)
	}
	rows := []outcomeRow{
		{"connected", r.Connected, waiting},
		{"accepted", r.Accepted, ""},
		{"reset", r.Reset, ""},
		{"refused", r.Refused, ""},
		{"timed out", r.TimedOut, timedOutNote(r.TimedOut, f.timeout, r.Emulated && !r.Emulation.AtSYN)},
	}
	rows = append(rows, extraRows(r.Counts, r.Errors, interrupted)...)
	printOutcomes(w, width, rows)
	printRelistens(w, r.Relistens)
	fmt.Fprintln(w)
	printConnectTimes(w, r.ConnectMS)
	s := r.Stats
	switch {
	case !s.Observed(backlog.StatQueueWait):
		fmt.Fprintln(w, "time in the queue: n/a")
	case s.QueueWait.Count == 0:
		fmt.Fprintln(w, "time in the queue: nothing was accepted")
	default:
		para(w, width, "time in the queue: ", s.QueueWait.String())
	}
	para(w, width, "listener: ", listenerText(s))
}

// listenerText is the listener's own account: what it observed, and which
// values this transport cannot see.
func listenerText(s backlog.Stats) string {
	var seen, unseen []string
	for _, v := range []struct {
		stat backlog.Stat
		name string
	}{
		{backlog.StatSYNs, "SYNs"}, {backlog.StatQueued, "queued"}, {backlog.StatIgnored, "ignored"},
		{backlog.StatRefused, "refused"}, {backlog.StatReset, "reset"}, {backlog.StatListenOverflows, "listen overflows"},
		{backlog.StatSyncookiesSent, "SYN cookies sent"}, {backlog.StatEvicted, "evicted"},
		{backlog.StatDeferredRefusals, "refused while a freed slot was not back (KB 295079)"},
	} {
		n, ok := s.Get(v.stat)
		switch {
		case !ok:
			unseen = append(unseen, v.name)
		case n == 0 && (v.stat == backlog.StatSyncookiesSent || v.stat == backlog.StatEvicted || v.stat == backlog.StatDeferredRefusals):
		default:
			seen = append(seen, fmt.Sprintf("%d %s", n, v.name))
		}
	}
	text := strings.Join(seen, ", ")
	if len(unseen) > 0 {
		if text != "" {
			text += "; "
		}
		text += "not observable here: " + strings.Join(unseen, ", ")
	}
	return text
}

// emulationNote says in one sentence how this kernel follows an emulated
// system's verdicts (package kernel's doc says it in full).
func emulationNote(name string, how lab.EmulationMode) string {
	if how.AtSYN {
		return fmt.Sprintf("Emulated at the SYN on this kernel: each SYN is decided by %s's rules before the kernel answers it.", name)
	}
	note := fmt.Sprintf("Emulated in front of this kernel's queue, after accept(): the kernel completes every handshake, so a client %s would refuse, ignore or evict connects and is then reset, and half-open limits, SYN cookies and eviction are not reproduced.", name)
	if how.Why != "" {
		note += " (Not at the SYN: " + how.Why + ".)"
	}
	return note
}

// extraRows are the outcome rows that only show when they happened:
// failed connects, and those an interruption left unfinished.
func extraRows(c lab.Counts, errs map[string]int, interrupted bool) []outcomeRow {
	var rows []outcomeRow
	if c.Failed > 0 {
		rows = append(rows, outcomeRow{"failed", c.Failed, errorNote(errs, "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "EPIPE", "timeout", "ETIMEDOUT")})
	}
	if c.Unfinished > 0 || interrupted {
		note := "still connecting, or not yet started, at the end"
		if interrupted {
			note = "still connecting, or not yet started, when interrupted"
		}
		rows = append(rows, outcomeRow{"unfinished", c.Unfinished, note})
	}
	return rows
}

func seconds1(ms float64) string { return fmt.Sprintf("%.1fs", ms/1000) }

// outcomeRow is one line of a summary: a count and a note.
type outcomeRow struct {
	label string
	n     int
	note  string
}

func printOutcomes(w io.Writer, width int, rows []outcomeRow) {
	for _, r := range rows {
		para(w, width, fmt.Sprintf("  %-10s %5d   ", r.label, r.n), r.note)
	}
}

func timedOutNote(n int, timeout time.Duration, emulated bool) string {
	if n == 0 {
		return ""
	}
	if emulated {
		return fmt.Sprintf("no answer within %s", durationText(timeout))
	}
	return fmt.Sprintf("no answer within %s: their SYNs were dropped without a word, and a client retries them", durationText(timeout))
}

func printConnectTimes(w io.Writer, p lab.Percentiles) {
	if p.Count == 0 {
		fmt.Fprintln(w, "connect time: n/a, no connect succeeded")
		return
	}
	fmt.Fprintf(w, "connect time: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n", p.P50, p.P90, p.P99, p.Max)
}

// errorNote lists connect errors but those in skip: "ECONNRESET 2".
func errorNote(errs map[string]int, skip ...string) string {
	var parts []string
	for _, name := range sortedKeys(errs) {
		if !slices.Contains(skip, name) {
			parts = append(parts, fmt.Sprintf("%s %d", name, errs[name]))
		}
	}
	return strings.Join(parts, ", ")
}

func printLabTable(w io.Writer, width int, rs []lab.Result, f labFlags, interrupted bool) {
	if interrupted {
		longest := 0.0
		for _, r := range rs {
			longest = max(longest, r.DurationMS)
		}
		para(w, width, "", fmt.Sprintf("Interrupted after %s: what follows is what had happened by then.", seconds1(longest)))
		fmt.Fprintln(w)
	}
	para(w, width, "", fmt.Sprintf("listen(%s) on %s: clients %s apart, %s each to connect; accepting: %s",
		f.backlog, rs[0].Transport, f.arrival, durationText(f.timeout), f.accept))
	emulated, atSYN := false, false
	var failed, unfinished bool
	for _, r := range rs {
		emulated = emulated || r.Emulated
		atSYN = atSYN || r.Emulation.AtSYN
		failed = failed || r.Failed > 0
		unfinished = unfinished || r.Unfinished > 0 || interrupted
	}
	switch {
	case emulated && atSYN:
		para(w, width, "", "Systems other than this host's are emulated at the SYN: each SYN is decided by their rules before the kernel answers it.")
	case emulated:
		para(w, width, "", "Systems other than this host's are emulated in front of the kernel's queue: what they would refuse, ignore or evict connects and is then reset.")
	}
	fmt.Fprintln(w)
	t := &table{cols: []column{
		{name: "SYSTEM"}, {name: "BACKLOG", right: true, drop: 4}, {name: "CAN WAIT", right: true, drop: 1},
		{name: "CLIENTS", right: true, drop: 5}, {name: "CONNECTED", right: true}, {name: "ACCEPTED", right: true, drop: 2},
		{name: "WAITING", right: true, drop: 6}, {name: "REFUSED", right: true}, {name: "RESET", right: true},
		{name: "TIMED OUT", right: true},
	}}
	if failed {
		t.cols = append(t.cols, column{name: "FAILED", right: true})
	}
	if unfinished {
		t.cols = append(t.cols, column{name: "UNFINISHED", right: true})
	}
	t.cols = append(t.cols, column{name: "P50 MS", right: true, drop: 7}, column{name: "MAX MS", right: true, drop: 8})
	for _, r := range rs {
		name := r.Personality
		cells := []string{name, strconv.Itoa(r.Backlog), strconv.Itoa(r.Capacity), strconv.Itoa(r.Clients),
			strconv.Itoa(r.Connected), strconv.Itoa(r.Accepted), strconv.Itoa(r.Waiting), strconv.Itoa(r.Refused),
			strconv.Itoa(r.Reset), strconv.Itoa(r.TimedOut)}
		if failed {
			cells = append(cells, strconv.Itoa(r.Failed))
		}
		if unfinished {
			cells = append(cells, strconv.Itoa(r.Unfinished))
		}
		p50, mx := "n/a", "n/a"
		if r.ConnectMS.Count > 0 {
			p50, mx = fmt.Sprintf("%.2f", r.ConnectMS.P50), fmt.Sprintf("%.2f", r.ConnectMS.Max)
		}
		t.add(append(cells, p50, mx)...)
	}
	t.write(w, width)
}

// printRelistens says what each listen() again did.
func printRelistens(w io.Writer, rs []lab.RelistenResult) {
	for _, r := range rs {
		if r.Err != "" {
			fmt.Fprintf(w, "  at %.1fs listen(%d) again failed: %s\n", r.AtMS/1000, r.Backlog, r.Err)
			continue
		}
		fmt.Fprintf(w, "  at %.1fs listen(%d) again: backlog %d, %d can wait\n", r.AtMS/1000, r.Backlog, r.Stored, r.Capacity)
	}
}

// A chart is an SVG file a command creates before its run, so that a path
// it cannot write fails at once rather than after the run, and draws once
// the run is over.
type chart struct{ f *os.File }

// createChart creates the file at path; with no path the chart draws
// nothing.
func createChart(path string) (*chart, error) {
	if path == "" {
		return &chart{}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &chart{f}, nil
}

// draw writes the chart with write and closes its file.
func (c *chart) draw(write func(io.Writer) error) error {
	f := c.f
	if f == nil {
		return nil
	}
	c.f = nil
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// close closes the file of a chart never drawn.
func (c *chart) close() {
	if c.f != nil {
		c.f.Close()
	}
}
