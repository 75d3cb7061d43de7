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

const labOverloadUsage = `Usage: backlog lab --overload [flags]

Overload at the accept queue. Clients arrive at a fixed rate whatever the
server does, each sends one request and gives up if no answer has come in
time; the application serves a fixed number of requests at once, each for
a fixed time, and does the work whether or not the client is still there.
Each listener policy runs in turn, round after round, on this host's
kernel over loopback. Reported per policy: goodput (answers received by
clients still waiting, per second), the share of the application's work
wasted on clients that had given up, latency of the answered, the clients
reset and those that gave up, and CPU per answer.

  --rate R[,R...]     arrivals: a multiple of the capacity such as 3x
                      (default), or a rate such as 1200/s; several run
                      one after another
  --duration D        how long clients arrive (default 5s)
  --give-up D         how long a client waits for its answer (default 1s)
  --service D         the application's time per request (default 20ms)
  --workers N         requests served at once (default 8); the capacity
                      is N / service
  --target D          CoDel's target wait (default 50ms)
  --interval D        CoDel's interval (default 100ms)
  --policies LIST     the listeners compared, comma-separated (default
                      net.Listen,small,large,codel,codel+lifo); also
                      plain, codel+sized and backlog=N
  --rounds N          runs of each policy, taking turns (default 1)
  --transport T       kernel (default) or netstack, which has neither
                      net.Listen nor codel+lifo
  --json              print the results as JSON (an array with several rates)
  --timeline          include the rates of every 100 ms in the JSON
  --svg FILE          draw answers and wasted work over time, and latencies
`

// wantsOverload reports whether a lab command line asks for the overload
// experiment.
func wantsOverload(args []string) bool {
	for _, a := range args {
		switch a {
		case "--overload", "-overload", "--overload=true", "-overload=true":
			return true
		case "--":
			return false
		}
	}
	return false
}

// overloadFlags holds the flags of `backlog lab --overload`.
type overloadFlags struct {
	overload  bool
	rates     string
	duration  time.Duration
	giveUp    time.Duration
	service   time.Duration
	workers   int
	target    time.Duration
	interval  time.Duration
	policies  string
	rounds    int
	transport string
	json      bool
	timeline  bool
	svg       string
}

// Bounds of an overload experiment's load.
const (
	maxOverloadRate    = 20000 // clients a second
	maxOverloadClients = 200000
)

func runLabOverload(ctx context.Context, e *env, args []string) error {
	var f overloadFlags
	fs := flag.NewFlagSet("lab", flag.ContinueOnError)
	fs.BoolVar(&f.overload, "overload", false, "")
	fs.StringVar(&f.rates, "rate", "3x", "")
	fs.DurationVar(&f.duration, "duration", 5*time.Second, "")
	fs.DurationVar(&f.giveUp, "give-up", time.Second, "")
	fs.DurationVar(&f.service, "service", 20*time.Millisecond, "")
	fs.IntVar(&f.workers, "workers", 8, "")
	fs.DurationVar(&f.target, "target", 50*time.Millisecond, "")
	fs.DurationVar(&f.interval, "interval", backlog.DefaultInterval, "")
	fs.StringVar(&f.policies, "policies", strings.Join(lab.DefaultPolicies, ","), "")
	fs.IntVar(&f.rounds, "rounds", 1, "")
	fs.StringVar(&f.transport, "transport", transport.Kernel, "")
	fs.BoolVar(&f.json, "json", false, "")
	fs.BoolVar(&f.timeline, "timeline", false, "")
	fs.StringVar(&f.svg, "svg", "", "")
	rest, err := parseFlags(e, fs, labOverloadUsage, args)
	if err != nil {
		return helpIsNotAnError(err)
	}
	cfgs, err := f.configs(rest)
	if err != nil {
		return err
	}
	var svgFile *os.File
	if f.svg != "" {
		if svgFile, err = os.Create(f.svg); err != nil {
			return err
		}
		defer svgFile.Close()
	}

	var results []lab.OverloadResult
	interrupted := false
	for _, cfg := range cfgs {
		load := cfg.Rate / cfg.Capacity()
		cfg.Progress = func(p lab.OverloadProgress) {
			if p.Done {
				fmt.Fprintf(e.stderr, "%.3gx round %d/%d %-12s %6d clients: %d answered, %d reset, %d gave up\n",
					load, p.Round, p.Rounds, p.Policy, p.Offered, p.Answered, p.Reset, p.GaveUp)
			}
		}
		res, err := lab.RunOverload(ctx, cfg)
		if err != nil {
			return err
		}
		results = append(results, res)
		if res.Interrupted {
			interrupted = true
			break
		}
	}
	if svgFile != nil {
		if err := lab.WriteOverloadSVG(svgFile, results); err != nil {
			return err
		}
		if err := svgFile.Close(); err != nil {
			return err
		}
	}
	if f.json {
		if !f.timeline {
			for i := range results {
				for j := range results[i].Runs {
					results[i].Runs[j].Timeline = nil
				}
			}
		}
		var err error
		if len(results) == 1 {
			err = writeJSON(e, results[0])
		} else {
			err = writeJSON(e, results)
		}
		if err != nil {
			return err
		}
	} else {
		for i, r := range results {
			if i > 0 {
				fmt.Fprintln(e.stdout)
			}
			printOverload(e.stdout, r, f)
		}
		if f.svg != "" {
			fmt.Fprintf(e.stdout, "\nCharts written to %s.\n", f.svg)
		}
	}
	if interrupted {
		fmt.Fprintln(e.stderr, "backlog lab: interrupted; the run under way is left out of the summary")
		return errInterrupted
	}
	return nil
}

// configs checks the flags and returns one experiment a rate.
func (f overloadFlags) configs(rest []string) ([]lab.OverloadConfig, error) {
	switch {
	case len(rest) > 0:
		return nil, usagef("lab", "unexpected argument %q; lab takes only flags", rest[0])
	case f.transport != transport.Kernel && f.transport != transport.Netstack:
		return nil, usagef("lab", "--transport %q: give kernel or netstack", f.transport)
	case f.duration < 100*time.Millisecond || f.duration > 5*time.Minute:
		return nil, usagef("lab", "--duration %v: give from 100ms to 5m", f.duration)
	case f.giveUp <= 0 || f.giveUp > time.Minute:
		return nil, usagef("lab", "--give-up %v: give more than 0 and at most 1m", f.giveUp)
	case f.service <= 0 || f.service > 10*time.Second:
		return nil, usagef("lab", "--service %v: give more than 0 and at most 10s", f.service)
	case f.workers < 1 || f.workers > 1000:
		return nil, usagef("lab", "--workers %d: give from 1 to 1000", f.workers)
	case f.target <= 0 || f.target > f.giveUp:
		return nil, usagef("lab", "--target %v: give more than 0 and at most --give-up (%v)", f.target, f.giveUp)
	case f.interval <= 0 || f.interval > time.Minute:
		return nil, usagef("lab", "--interval %v: give more than 0 and at most 1m", f.interval)
	case f.rounds < 1 || f.rounds > 100:
		return nil, usagef("lab", "--rounds %d: give from 1 to 100", f.rounds)
	}
	base := lab.OverloadConfig{
		Transport: f.transport, Duration: f.duration, GiveUp: f.giveUp, Service: f.service,
		Workers: f.workers, Rounds: f.rounds,
	}
	capacity := base.Capacity()
	o := backlog.Overload{Target: f.target, Interval: f.interval}
	for _, name := range strings.Split(f.policies, ",") {
		p, err := lab.ParsePolicy(strings.TrimSpace(name), o, capacity)
		if err != nil {
			return nil, usagef("lab", "--policies %q: unknown policy %q; give a list of %s, backlog=N", f.policies, name, strings.Join(lab.PolicyNames, ", "))
		}
		if f.transport == transport.Netstack && (p.NetListen || p.Overload.LIFO || p.Overload.SizeBacklog) {
			return nil, usagef("lab", "--policies %q: %s runs on --transport kernel only", f.policies, name)
		}
		base.Policies = append(base.Policies, p)
	}
	var cfgs []lab.OverloadConfig
	for _, r := range strings.Split(f.rates, ",") {
		rate, ok := parseRate(strings.TrimSpace(r), capacity)
		if !ok || rate > maxOverloadRate || rate*f.duration.Seconds() > maxOverloadClients {
			return nil, usagef("lab", "--rate %q: give multiples of the capacity such as 1.5x,3x, or rates such as 1200/s, up to %d/s and %d clients a run", f.rates, maxOverloadRate, maxOverloadClients)
		}
		c := base
		c.Rate = rate
		cfgs = append(cfgs, c)
	}
	return cfgs, nil
}

// parseRate reads "3x" (times capacity) or "1200/s".
func parseRate(s string, capacity float64) (float64, bool) {
	if v, ok := strings.CutSuffix(s, "x"); ok {
		m, err := strconv.ParseFloat(v, 64)
		return m * capacity, err == nil && m > 0
	}
	if v, ok := strings.CutSuffix(s, "/s"); ok {
		r, err := strconv.ParseFloat(v, 64)
		return r, err == nil && r > 0
	}
	return 0, false
}

// printOverload writes one experiment as a table.
func printOverload(w io.Writer, r lab.OverloadResult, f overloadFlags) {
	fmt.Fprintf(w, "Overload at the accept queue, %s transport: clients arrive at %.0f/s, %.3gx the application's capacity of %.0f/s\n",
		r.Transport, r.RatePerSec, r.Load, r.CapacityPerSec)
	fmt.Fprintf(w, "(%d workers, %v a request), for %v; each gives up %v after it starts; CoDel target %v, interval %v\n",
		r.Workers, f.service, f.duration, f.giveUp, f.target, f.interval)
	rounds := "1 run each"
	if r.Rounds > 1 {
		rounds = fmt.Sprintf("%d runs each, the policies taking turns: medians, and the range in brackets", r.Rounds)
	}
	fmt.Fprintf(w, "%s\n\n", rounds)
	backlogs := map[string]int{}
	for _, run := range r.Runs {
		if run.Capacity > 0 {
			backlogs[run.Policy] = run.Backlog
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POLICY\tBACKLOG\tGOODPUT/S\tOF CAPACITY\tWASTED\tP50 MS\tP99 MS\tRESET\tRESET IN MS\tGAVE UP\tCPU US/ANSWER")
	for _, s := range r.Summary {
		bl := "default"
		if n, ok := backlogs[s.Policy]; ok {
			bl = strconv.Itoa(n)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Policy, bl,
			spread(&s.GoodputPerSec, "%.0f", 1), spread(&s.GoodputOfCapacity, "%.2f", 1), spread(s.WastedFraction, "%.1f%%", 100),
			spread(s.P50MS, "%.0f", 1), spread(s.P99MS, "%.0f", 1), spread(&s.Reset, "%.0f", 1), spread(s.ResetP50MS, "%.0f", 1),
			spread(&s.GaveUp, "%.0f", 1), spread(s.CPUPerAnswerUS, "%.0f", 1))
	}
	tw.Flush()
	fmt.Fprintln(w, "\ngoodput: answers received in time, per second of arrivals; wasted: the share of the work done for clients")
	fmt.Fprintln(w, "that had given up; P50/P99: the answered clients' wait for their answer; reset in: how soon a reset client")
	fmt.Fprintln(w, "knew (median); CPU: the whole process's (clients too), per answer; n/a: nothing to measure")
	if r.Interrupted {
		fmt.Fprintln(w, "interrupted: the summary has the runs that ended")
	}
}

// spread formats a median and, when the runs differ, their range; n/a
// for a figure with nothing to measure.
func spread(s *lab.Spread, format string, scale float64) string {
	if s == nil {
		return "n/a"
	}
	med := fmt.Sprintf(format, s.Median*scale)
	lo, hi := fmt.Sprintf(format, s.Min*scale), fmt.Sprintf(format, s.Max*scale)
	if lo == hi {
		return med
	}
	return fmt.Sprintf("%s [%s-%s]", med, lo, hi)
}
