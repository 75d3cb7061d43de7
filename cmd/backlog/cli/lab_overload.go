package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/lab"
	"github.com/backlog-dev/backlog/internal/transport"
)

// overloadFlags holds the flags of `backlog lab --overload`.
type overloadFlags struct {
	overload  bool
	rates     []string
	duration  time.Duration
	giveUp    time.Duration
	service   time.Duration
	workers   int
	target    time.Duration
	interval  time.Duration
	policies  []string
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

// labOverloadCommand is `backlog lab --overload`: the lab's second
// experiment, with flags of its own.
func labOverloadCommand() (*flags, runFunc) {
	fl := newFlags("lab", "--overload [flags]", `
Overload at the accept queue. Clients arrive at a fixed rate whatever the
server does; each sends one request and gives up if no answer has come in
time. The application serves a fixed number of requests at once, each for a
fixed time, and does the work whether or not its client is still there.
Each listener policy runs in turn, round after round, on this host's kernel
over loopback. Reported per policy: goodput (answers received by clients
still waiting, per second), the share of the work wasted on clients that
had given up, latency of the answered, the clients reset and those that
gave up, and CPU per answer. Interrupted (Ctrl-C), it prints the runs that
ended and exits with status 130.`)
	var f overloadFlags
	fl.switchFlag(&f.overload, "overload", "this experiment rather than the queue at work")
	fl.add("rate", "R", "how fast clients arrive: a multiple of the capacity such as 3x, or a rate such as 1200/s; a comma-separated list runs each in turn", "3x", rateListValue{&f.rates})
	fl.durationFlag(&f.duration, "duration", "how long clients arrive", 5*time.Second, 100*time.Millisecond, 5*time.Minute)
	fl.durationFlag(&f.giveUp, "give-up", "how long a client waits for its answer, from its start", time.Second, time.Millisecond, time.Minute)
	fl.durationFlag(&f.service, "service", "the application's time per request", 20*time.Millisecond, 100*time.Microsecond, 10*time.Second)
	fl.intFlag(&f.workers, "workers", "N", "requests served at once; the capacity is N / service", 8, 1, 1000, "a number of workers")
	fl.durationFlag(&f.target, "target", "CoDel's target wait, at most --give-up", 50*time.Millisecond, time.Millisecond, time.Minute)
	fl.durationFlag(&f.interval, "interval", "CoDel's interval", backlog.DefaultInterval, time.Millisecond, time.Minute)
	f.policies = lab.DefaultPolicies
	fl.add("policies", "LIST", fmt.Sprintf("the listeners compared, comma-separated: %s, or backlog=N", orList(lab.PolicyNames)), strings.Join(lab.DefaultPolicies, ","), policyListValue{&f.policies})
	fl.intFlag(&f.rounds, "rounds", "N", "runs of each policy, the policies taking turns", 1, 1, 100, "a number of rounds")
	fl.choiceFlag(&f.transport, "transport", "T", "kernel: this host's kernel, on loopback; netstack: in this process, without net.Listen or codel+lifo", transport.Kernel, transport.Kernel, transport.Netstack)
	fl.switchFlag(&f.json, "json", "print the results as JSON: an array, one object per rate")
	fl.switchFlag(&f.timeline, "timeline", "include the rates of every 100 ms in the JSON")
	fl.add("svg", "FILE", "draw answers and wasted work over time, and latencies", "", pathValue{&f.svg})
	return fl, func(ctx context.Context, e *env, args []string) error {
		if err := fl.onlyFlags(args); err != nil {
			return err
		}
		cfgs, err := f.configs(fl)
		if err != nil {
			return err
		}
		return runLabOverload(ctx, e, f, cfgs)
	}
}

// rateListValue is --rate: each value checked for its form here, against
// the capacity once every flag is read.
type rateListValue struct{ p *[]string }

func (v rateListValue) String() string { return strings.Join(*v.p, ",") }
func (v rateListValue) Set(s string) error {
	var rates []string
	for _, r := range strings.Split(s, ",") {
		r = strings.TrimSpace(r)
		if _, ok := parseRate(r, 1); !ok {
			return errors.New("give multiples of the capacity such as 1.5x,3x, or rates such as 1200/s")
		}
		rates = append(rates, r)
	}
	*v.p = rates
	return nil
}

// policyListValue is --policies.
type policyListValue struct{ p *[]string }

func (v policyListValue) String() string { return strings.Join(*v.p, ",") }
func (v policyListValue) Set(s string) error {
	var names []string
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if _, err := lab.ParsePolicy(name, backlog.Overload{Target: time.Millisecond}, 1); err != nil {
			return fmt.Errorf("unknown policy %q; give a list of %s, or backlog=N", name, orList(lab.PolicyNames))
		}
		names = append(names, name)
	}
	*v.p = names
	return nil
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

// configs checks what no one flag can check alone and returns one
// experiment a rate.
func (f overloadFlags) configs(fl *flags) ([]lab.OverloadConfig, error) {
	if f.rates == nil {
		f.rates = []string{"3x"}
	}
	if f.target > f.giveUp {
		return nil, fl.invalid("target", fmt.Sprintf("give a target no longer than --give-up (%s)", durationText(f.giveUp)))
	}
	base := lab.OverloadConfig{
		Transport: f.transport, Duration: f.duration, GiveUp: f.giveUp, Service: f.service,
		Workers: f.workers, Rounds: f.rounds,
	}
	capacity := base.Capacity()
	o := backlog.Overload{Target: f.target, Interval: f.interval}
	for _, name := range f.policies {
		p, err := lab.ParsePolicy(name, o, capacity)
		if err != nil {
			return nil, fl.invalid("policies", err.Error())
		}
		if f.transport == transport.Netstack && (p.NetListen || p.Overload.LIFO || p.Overload.SizeBacklog) {
			return nil, fl.invalid("policies", name+" runs on --transport kernel only")
		}
		base.Policies = append(base.Policies, p)
	}
	var cfgs []lab.OverloadConfig
	for _, r := range f.rates {
		rate, _ := parseRate(r, capacity)
		if rate > maxOverloadRate || rate*f.duration.Seconds() > maxOverloadClients {
			return nil, fl.invalid("rate", fmt.Sprintf("%s is %.0f clients a second against a capacity of %.0f/s; give at most %d/s and %d clients a run", r, rate, capacity, maxOverloadRate, maxOverloadClients))
		}
		c := base
		c.Rate = rate
		cfgs = append(cfgs, c)
	}
	return cfgs, nil
}

func runLabOverload(ctx context.Context, e *env, f overloadFlags, cfgs []lab.OverloadConfig) error {
	svg, err := createChart(f.svg)
	if err != nil {
		return err
	}
	defer svg.close()
	var results []lab.OverloadResult
	for _, cfg := range cfgs {
		load := cfg.Rate / cfg.Capacity()
		cfg.Progress = func(p lab.OverloadProgress) {
			if p.Done {
				fmt.Fprintf(e.stderr, "%.3gx round %d/%d %-11s %6d clients: %d answered, %d reset, %d gave up\n",
					load, p.Round, p.Rounds, p.Policy, p.Offered, p.Answered, p.Reset, p.GaveUp)
			}
		}
		res, err := lab.RunOverload(ctx, cfg)
		if err != nil {
			return err
		}
		results = append(results, res)
		if res.Interrupted {
			break
		}
	}
	interrupted := ctx.Err() != nil
	if err := svg.draw(func(w io.Writer) error { return lab.WriteOverloadSVG(w, results) }); err != nil {
		return err
	}
	if f.json {
		if !f.timeline {
			for i := range results {
				for j := range results[i].Runs {
					results[i].Runs[j].Timeline = nil
				}
			}
		}
		if results == nil {
			results = []lab.OverloadResult{}
		}
		if err := writeJSON(e, results); err != nil {
			return err
		}
	} else {
		for i, r := range results {
			if i > 0 {
				fmt.Fprintln(e.stdout)
			}
			printOverload(e.stdout, r)
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

// printOverload writes one experiment as two tables within 80 columns:
// what the clients got, and what it cost.
func printOverload(w io.Writer, r lab.OverloadResult) {
	ms := func(v float64) string { return durationText(time.Duration(v * float64(time.Millisecond))) }
	fmt.Fprintf(w, "Overload at the accept queue (%s): clients arrive at %.0f/s, %.3gx\n", r.Transport, r.RatePerSec, r.Load)
	fmt.Fprintf(w, "the application's capacity of %.0f/s (%d workers, %s a request), for %s;\n", r.CapacityPerSec, r.Workers, ms(r.ServiceMS), ms(r.DurationMS))
	fmt.Fprintf(w, "each client gives up %s after it starts.\n", ms(r.GiveUpMS))
	if r.Rounds > 1 {
		fmt.Fprintf(w, "Medians of %d runs, the policies taking turns; --json has each run.\n", r.Rounds)
	}
	fmt.Fprintln(w)
	if len(r.Summary) == 0 {
		fmt.Fprintln(w, "No run ended.")
	}
	backlogs := map[string]int{}
	for _, run := range r.Runs {
		if run.Capacity > 0 {
			backlogs[run.Policy] = run.Backlog
		}
	}
	backlogOf := func(policy string) string {
		if n, ok := backlogs[policy]; ok {
			return strconv.Itoa(n)
		}
		return "default"
	}
	if len(r.Summary) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "POLICY\tBACKLOG\tGOODPUT/S\tOF CAPACITY\tP50 MS\tP99 MS\tRESET\tGAVE UP")
		for _, s := range r.Summary {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Policy, backlogOf(s.Policy),
				median(&s.GoodputPerSec, "%.0f", 1), median(&s.GoodputOfCapacity, "%.2f", 1),
				median(s.P50MS, "%.0f", 1), median(s.P99MS, "%.0f", 1), median(&s.Reset, "%.0f", 1), median(&s.GaveUp, "%.0f", 1))
		}
		tw.Flush()
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "POLICY\tWORK WASTED\tA RESET KNEW IN MS\tCPU US/ANSWER")
		for _, s := range r.Summary {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Policy,
				median(s.WastedFraction, "%.1f%%", 100), median(s.ResetP50MS, "%.0f", 1), median(s.CPUPerAnswerUS, "%.0f", 1))
		}
		tw.Flush()
		fmt.Fprintln(w, `
goodput: answers received in time, per second of arrivals; P50/P99: the
answered clients' wait for their answer; work wasted: the share of the
requests served to clients that had given up; a reset knew in: the median
time to a reset client's error; CPU: the whole process's (clients too), per
answer; n/a: nothing to measure.`)
	}
	if r.Interrupted {
		fmt.Fprintln(w, "Interrupted: the summary has the runs that ended.")
	}
}

// median formats a figure's median over the runs; n/a for a figure with
// nothing to measure.
func median(s *lab.Spread, format string, scale float64) string {
	if s == nil {
		return "n/a"
	}
	return fmt.Sprintf(format, s.Median*scale)
}
