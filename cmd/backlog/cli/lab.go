package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/lab"
	"github.com/backlog-dev/backlog/internal/transport"
)

const labUsage = `Usage: backlog lab [flags]

Shows a listen queue at work: a listener with a system's rules, an
application that accepts at a chosen pace, and clients that connect, one
after another; then what each client met. By default everything runs in
this process on a user-space TCP/IP stack: no root, no ports on this host.

  --personality NAME   the system (default: this host's); "all" runs every
                       system side by side; repeatable
  --transport T        netstack (default) or kernel: this host's kernel, on
                       loopback
  --backlog N          the backlog passed to listen() (default 5)
  --clients N          how many clients connect (default: 3 x capacity)
  --arrival D          time between clients' starts (default 2ms; 0 starts
                       them together)
  --accept PACE        none (default), max, or a rate such as 10/s
  --accept-after D     the application's first accept waits D
  --relisten D:N       call listen(N) again D after the start (repeatable),
                       such as 2s:1
  --timeout D          each client's connect timeout (default 3s)
  --json               print the results as JSON (an array with several)
  --timeline           include the queue samples in the JSON
  --svg FILE           draw queue length over time and connect times
  --overload           the overload experiment instead: backlog lab --overload -h
`

// labFlags holds the flags of one lab command.
type labFlags struct {
	personalities listFlag
	transport     string
	backlog       int
	clients       int
	arrival       time.Duration
	accept        string
	acceptAfter   time.Duration
	relisten      relistenFlag
	timeout       time.Duration
	json          bool
	timeline      bool
	svg           string
}

// maxClients bounds a lab's load.
const maxClients = 20000

func runLab(ctx context.Context, e *env, args []string) error {
	if wantsOverload(args) {
		return runLabOverload(ctx, e, args)
	}
	var f labFlags
	fs := flag.NewFlagSet("lab", flag.ContinueOnError)
	fs.Var(&f.personalities, "personality", "")
	fs.StringVar(&f.transport, "transport", transport.Netstack, "")
	fs.IntVar(&f.backlog, "backlog", 5, "")
	fs.IntVar(&f.clients, "clients", 0, "")
	fs.DurationVar(&f.arrival, "arrival", 2*time.Millisecond, "")
	fs.StringVar(&f.accept, "accept", "none", "")
	fs.DurationVar(&f.acceptAfter, "accept-after", 0, "")
	fs.Var(&f.relisten, "relisten", "")
	fs.DurationVar(&f.timeout, "timeout", 3*time.Second, "")
	fs.BoolVar(&f.json, "json", false, "")
	fs.BoolVar(&f.timeline, "timeline", false, "")
	fs.StringVar(&f.svg, "svg", "", "")
	rest, err := parseFlags(e, fs, labUsage, args)
	if err != nil {
		return helpIsNotAnError(err)
	}
	if len(rest) > 0 {
		return usagef("lab", "unexpected argument %q; lab takes only flags", rest[0])
	}
	policy, err := parseAccept("lab", f.accept)
	if err != nil {
		return err
	}
	policy.After = f.acceptAfter
	switch {
	case f.transport != transport.Netstack && f.transport != transport.Kernel:
		return usagef("lab", "unknown transport %q; valid: netstack, kernel", f.transport)
	case f.clients < 0 || f.clients > maxClients:
		return usagef("lab", "--clients must be from 1 to %d", maxClients)
	case f.timeout <= 0 || f.timeout > 10*time.Minute:
		return usagef("lab", "--timeout must be more than 0 and at most 10m")
	case f.arrival < 0 || f.acceptAfter < 0:
		return usagef("lab", "--arrival and --accept-after cannot be negative")
	}
	ps := []backlog.Personality{transport.Host()}
	if len(f.personalities) > 0 {
		if ps, err = resolve("lab", f.personalities); err != nil {
			return err
		}
	}
	var svgFile *os.File
	if f.svg != "" {
		if svgFile, err = os.Create(f.svg); err != nil {
			return err
		}
		defer svgFile.Close()
	}

	prog := newProgressView(e, len(ps))
	cfgs := make([]lab.Config, len(ps))
	for i, p := range ps {
		cfgs[i] = lab.Config{
			Personality: p, Transport: f.transport, Backlog: f.backlog, Clients: f.clients,
			Arrival: f.arrival, Accept: policy, Timeout: f.timeout, Relisten: f.relisten,
			Progress: func(pr lab.Progress) { prog.update(i, pr) },
		}
	}
	results, err := lab.RunAll(ctx, cfgs)
	prog.finish()
	if err != nil {
		return err
	}
	if svgFile != nil {
		if err := lab.WriteSVG(svgFile, results); err != nil {
			return err
		}
		if err := svgFile.Close(); err != nil {
			return err
		}
	}
	if f.json {
		if !f.timeline {
			for i := range results {
				results[i].Timeline = nil
			}
		}
		if len(results) == 1 {
			return writeJSON(e, results[0])
		}
		return writeJSON(e, results)
	}
	if len(results) == 1 {
		printLabResult(e, results[0], f, policy)
	} else {
		printLabTable(e, results, f, policy)
	}
	if f.svg != "" {
		fmt.Fprintf(e.stdout, "\nCharts written to %s.\n", f.svg)
	}
	return nil
}

// parseAccept reads --accept: none, max, or a rate such as 10/s.
func parseAccept(cmd, s string) (lab.AcceptPolicy, error) {
	switch s {
	case "none":
		return lab.AcceptPolicy{Never: true}, nil
	case "max":
		return lab.AcceptPolicy{}, nil
	}
	if n, ok := strings.CutSuffix(s, "/s"); ok {
		if r, err := strconv.ParseFloat(n, 64); err == nil && r > 0 && r <= 1e6 {
			return lab.AcceptPolicy{Rate: r}, nil
		}
	}
	return lab.AcceptPolicy{}, usagef(cmd, "--accept %q: give none, max, or a rate such as 10/s", s)
}

func printLabResult(e *env, r lab.Result, f labFlags, policy lab.AcceptPolicy) {
	p, _ := backlog.Lookup(r.Personality)
	w := e.stdout
	fmt.Fprintf(w, "%s on %s, listen(%d): backlog %d, %d can wait; when full: %s\n",
		r.Personality, r.Transport, r.RequestedBacklog, r.Backlog, r.Capacity, p.FullVerdict())
	fmt.Fprintf(w, "%d clients %s apart, each given %s to connect; the application accepts: %s\n\n",
		r.Clients, f.arrival, f.timeout, policy)
	waiting := ""
	if r.Waiting > 0 {
		waiting = fmt.Sprintf("%d still waiting, %d of them in the server's queue", r.Waiting, r.InQueue)
	}
	printOutcomes(w, []outcomeRow{
		{"connected", r.Connected, waiting},
		{"accepted", r.Accepted, ""},
		{"reset", r.Reset, ""},
		{"refused", r.Refused, errorNote(r.Errors, "timeout")},
		{"timed out", r.TimedOut, timedOutNote(r.TimedOut, f.timeout)},
	})
	printRelistens(w, r.Relistens)
	printConnectTimes(w, r.ConnectMS)
	s := r.Stats
	switch {
	case !s.Observed(backlog.StatQueueWait):
		fmt.Fprintln(w, "time in the queue: n/a")
	case s.QueueWait.Count == 0:
		fmt.Fprintln(w, "time in the queue: nothing was accepted")
	default:
		fmt.Fprintf(w, "time in the queue: %s\n", s.QueueWait)
	}
	fmt.Fprintf(w, "listener: %s SYNs, %s queued, %s ignored, %s refused, %s reset, %s listen overflows",
		value(s, backlog.StatSYNs), value(s, backlog.StatQueued), value(s, backlog.StatIgnored),
		value(s, backlog.StatRefused), value(s, backlog.StatReset), value(s, backlog.StatListenOverflows))
	if s.SyncookiesSent > 0 {
		fmt.Fprintf(w, ", %d SYN cookies sent, %d returned", s.SyncookiesSent, s.SyncookiesRecv)
	}
	if s.Evicted > 0 {
		fmt.Fprintf(w, ", %d evicted", s.Evicted)
	}
	if s.DeferredRefusals > 0 {
		fmt.Fprintf(w, ", %d refused while a freed slot was not back (KB 295079)", s.DeferredRefusals)
	}
	fmt.Fprintln(w)
}

// outcomeRow is one line of a summary: a count and a note.
type outcomeRow struct {
	label string
	n     int
	note  string
}

func printOutcomes(w io.Writer, rows []outcomeRow) {
	for _, r := range rows {
		fmt.Fprintln(w, strings.TrimRight(fmt.Sprintf("  %-10s %5d   %s", r.label, r.n, r.note), " "))
	}
}

func timedOutNote(n int, timeout time.Duration) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("no answer within %s: their SYNs were dropped without a word, and a client retries them", timeout)
}

func printConnectTimes(w io.Writer, p lab.Percentiles) {
	fmt.Fprintf(w, "\nconnect time: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n", p.P50, p.P90, p.P99, p.Max)
}

// errorNote lists connect errors other than skip: "ECONNREFUSED 9".
func errorNote(errs map[string]int, skip string) string {
	var parts []string
	for _, name := range sortedKeys(errs) {
		if name != skip {
			parts = append(parts, fmt.Sprintf("%s %d", name, errs[name]))
		}
	}
	return strings.Join(parts, ", ")
}

func printLabTable(e *env, rs []lab.Result, f labFlags, policy lab.AcceptPolicy) {
	fmt.Fprintf(e.stdout, "listen(%d) on %s; clients %s apart, %s to connect; the application accepts: %s\n\n",
		f.backlog, rs[0].Transport, f.arrival, f.timeout, policy)
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PERSONALITY\tBACKLOG\tCAN WAIT\tCLIENTS\tCONNECTED\tACCEPTED\tWAITING\tREFUSED\tRESET\tTIMED OUT\tP50 MS\tMAX MS")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.2f\t%.2f\n", r.Personality, r.Backlog, r.Capacity,
			r.Clients, r.Connected, r.Accepted, r.Waiting, r.Refused, r.Reset, r.TimedOut, r.ConnectMS.P50, r.ConnectMS.Max)
	}
	tw.Flush()
}

// relistenFlag is --relisten D:N, repeatable.
type relistenFlag []lab.Relisten

func (f *relistenFlag) String() string {
	var parts []string
	for _, r := range *f {
		parts = append(parts, r.String())
	}
	return strings.Join(parts, " ")
}

func (f *relistenFlag) Set(v string) error {
	d, n, ok := strings.Cut(v, ":")
	after, err := time.ParseDuration(d)
	if !ok || err != nil || after <= 0 {
		return fmt.Errorf("%q: give D:N, a time after the start and a backlog, such as 2s:1", v)
	}
	b, err := strconv.Atoi(n)
	if err != nil {
		return fmt.Errorf("%q: the backlog %q is not an integer", v, n)
	}
	*f = append(*f, lab.Relisten{After: after, Backlog: b})
	return nil
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
