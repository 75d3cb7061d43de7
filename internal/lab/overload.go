package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/transport"
)

// OverloadConfig describes an overload experiment: clients that arrive at
// a fixed rate whatever the server does (open loop), each sending one
// request and giving up if no answer comes in time, and an application
// that serves a fixed number of requests at once, each for a fixed time;
// run once for each policy, the policies taking turns round after round so
// that every one meets the same machine.
type OverloadConfig struct {
	// Transport is transport.Kernel (the default: this host's kernel, on
	// loopback) or transport.Netstack.
	Transport string
	// Policies are the listeners compared.
	Policies []OverloadPolicy
	// Rate is how many clients arrive a second.
	Rate float64
	// Duration is how long clients keep arriving. Zero means 5 s.
	Duration time.Duration
	// GiveUp is how long a client waits for its answer, from its start,
	// connect included. Zero means 1 s.
	GiveUp time.Duration
	// Service is how long the application works on one request. Zero
	// means 20 ms.
	Service time.Duration
	// Workers is how many requests the application works on at once,
	// each worker calling Accept when it is free. Zero means 8.
	Workers int
	// Rounds is how many times each policy runs. Zero means 1.
	Rounds int
	// Progress, if not nil, is called about every 200 ms during a run and
	// once at its end.
	Progress func(OverloadProgress)
}

// withDefaults fills in the zero values.
func (c OverloadConfig) withDefaults() OverloadConfig {
	if c.Transport == "" {
		c.Transport = transport.Kernel
	}
	if c.Duration == 0 {
		c.Duration = 5 * time.Second
	}
	if c.GiveUp == 0 {
		c.GiveUp = time.Second
	}
	if c.Service == 0 {
		c.Service = 20 * time.Millisecond
	}
	if c.Workers == 0 {
		c.Workers = 8
	}
	if c.Rounds == 0 {
		c.Rounds = 1
	}
	return c
}

// Capacity is how many requests a second the application serves when it
// is never idle: Workers / Service.
func (c OverloadConfig) Capacity() float64 {
	c = c.withDefaults()
	return float64(c.Workers) / c.Service.Seconds()
}

// An OverloadPolicy is one listener of the comparison.
type OverloadPolicy struct {
	// Name labels it in tables and charts.
	Name string `json:"name"`
	// NetListen uses Go's net.Listen, the baseline; kernel transport only.
	NetListen bool `json:"net_listen,omitempty"`
	// Backlog is passed to listen(); zero means the default (what
	// net.Listen asks for).
	Backlog int `json:"backlog,omitempty"`
	// Overload is the listener's policy.
	Overload backlog.Overload `json:"-"`
}

// The policies a comparison can name.
const (
	PolicyNetListen = "net.Listen"
	PolicyPlain     = "plain"
	PolicySmall     = "small"
	PolicyLarge     = "large"
	PolicyCoDel     = "codel"
	PolicyLIFO      = "codel+lifo"
	PolicySized     = "codel+sized"
)

// PolicyNames lists the names ParsePolicy takes, besides backlog=N.
var PolicyNames = []string{PolicyNetListen, PolicyPlain, PolicySmall, PolicyLarge, PolicyCoDel, PolicyLIFO, PolicySized}

// DefaultPolicies are the ones `backlog lab --overload` compares: Go's
// listener, a small and a large backlog, CoDel, and CoDel serving newest
// first.
var DefaultPolicies = []string{PolicyNetListen, PolicySmall, PolicyLarge, PolicyCoDel, PolicyLIFO}

// largeBacklog is what the large-backlog policy asks for: more than any
// default, clamped to the host's maximum (net.core.somaxconn on Linux).
const largeBacklog = 65535

// ParsePolicy returns the policy a name means, with o's target and
// interval for the CoDel ones, and the small backlog sized to the
// application's capacity times the target, as SizeBacklog would size it
// (the fixed form of h2o's max_conn_backlog, h2o/h2o#2853).
func ParsePolicy(name string, o backlog.Overload, capacity float64) (OverloadPolicy, error) {
	codel := backlog.Overload{Target: o.Target, Interval: o.Interval}
	switch name {
	case PolicyNetListen:
		return OverloadPolicy{Name: name, NetListen: true}, nil
	case PolicyPlain:
		return OverloadPolicy{Name: name}, nil
	case PolicySmall:
		return OverloadPolicy{Name: name, Backlog: max(1, int(math.Ceil(capacity*o.Target.Seconds())))}, nil
	case PolicyLarge:
		return OverloadPolicy{Name: name, Backlog: largeBacklog}, nil
	case PolicyCoDel:
		return OverloadPolicy{Name: name, Overload: codel}, nil
	case PolicyLIFO:
		codel.LIFO = true
		return OverloadPolicy{Name: name, Overload: codel}, nil
	case PolicySized:
		codel.SizeBacklog = true
		return OverloadPolicy{Name: name, Overload: codel}, nil
	}
	if v, ok := strings.CutPrefix(name, "backlog="); ok {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			return OverloadPolicy{Name: name, Backlog: n}, nil
		}
	}
	return OverloadPolicy{}, fmt.Errorf("unknown policy %q", name)
}

// OverloadProgress is the state of a run while it goes on.
type OverloadProgress struct {
	Policy        string
	Round, Rounds int
	Elapsed       time.Duration
	Offered       int
	Answered      int
	Reset         int
	GaveUp        int
	Done          bool
}

// OverloadResult is what an experiment found.
type OverloadResult struct {
	Transport      string  `json:"transport"`
	RatePerSec     float64 `json:"rate_per_sec"`
	CapacityPerSec float64 `json:"capacity_per_sec"`
	// Load is the rate over the capacity.
	Load       float64 `json:"load"`
	DurationMS float64 `json:"duration_ms"`
	GiveUpMS   float64 `json:"give_up_ms"`
	ServiceMS  float64 `json:"service_ms"`
	Workers    int     `json:"workers"`
	Rounds     int     `json:"rounds"`
	// Summary has one entry a policy: the median of its runs, and their
	// range.
	Summary []OverloadSummary `json:"summary"`
	// Runs lists every run in the order they ran.
	Runs []OverloadRun `json:"runs"`
	// Interrupted is set when the experiment was stopped before its end;
	// the last run is then partial.
	Interrupted bool `json:"interrupted,omitempty"`
}

// OverloadRun is one run of one policy.
type OverloadRun struct {
	Policy string `json:"policy"`
	Round  int    `json:"round"`
	// Backlog and Capacity are the listener's stored backlog and how
	// many connections can wait, at the start.
	Backlog  int `json:"backlog"`
	Capacity int `json:"capacity"`
	// Overload is the listener's policy, "none" without one.
	Overload string `json:"overload"`
	// Offered counts the clients that arrived.
	Offered int `json:"offered"`
	// Answered counts the clients that got their answer in time.
	Answered int `json:"answered"`
	// GoodputPerSec is the answers received while clients arrived, per
	// second of that time; GoodputOfCapacity the same over the
	// application's capacity.
	GoodputPerSec     float64 `json:"goodput_per_sec"`
	GoodputOfCapacity float64 `json:"goodput_of_capacity"`
	// Served counts the requests the application finished, and Wasted
	// those of clients that had given up by then; WastedFraction is
	// Wasted over Served (null when nothing was served).
	Served         int      `json:"served"`
	Wasted         int      `json:"wasted"`
	WastedFraction *float64 `json:"wasted_fraction"`
	// Reset counts clients whose connection was reset, GaveUp those that
	// waited their whole time (in connect or for the answer), Failed those
	// that failed otherwise.
	Reset  int `json:"reset"`
	GaveUp int `json:"gave_up"`
	Failed int `json:"failed"`
	// LatencyMS summarises how long the answered waited for their answer,
	// from their start; null when none was answered.
	LatencyMS *Percentiles `json:"latency_ms"`
	// ResetMS summarises how soon the reset clients knew; null when none
	// was.
	ResetMS *Percentiles `json:"reset_ms"`
	// CPUPerAnswerUS is the CPU time of the whole process (clients,
	// network and server together) over the run, per answer; null where
	// it cannot be read or nothing was answered.
	CPUPerAnswerUS *float64 `json:"cpu_us_per_answer"`
	// Listener is the listener's own account at the end; null for
	// net.Listen, which keeps none.
	Listener *backlog.Stats `json:"listener"`
	// Timeline has, every 100 ms, the answers and the wasted work of that
	// time, per second.
	Timeline []OverloadSample `json:"timeline,omitempty"`
	// Latencies are the answered clients' waits, for charts.
	Latencies []time.Duration `json:"-"`
	// Interrupted is set on a run that was stopped before its end.
	Interrupted bool `json:"interrupted,omitempty"`
}

// OverloadSample is the rates of one slice of a run.
type OverloadSample struct {
	MS             float64 `json:"ms"`
	AnsweredPerSec float64 `json:"answered_per_sec"`
	WastedPerSec   float64 `json:"wasted_per_sec"`
	ResetPerSec    float64 `json:"reset_per_sec"`
	GaveUpPerSec   float64 `json:"gave_up_per_sec"`
}

// OverloadSummary is a policy's runs in a few numbers: the median of each
// figure over the runs, and its range.
type OverloadSummary struct {
	Policy            string  `json:"policy"`
	Runs              int     `json:"runs"`
	GoodputPerSec     Spread  `json:"goodput_per_sec"`
	GoodputOfCapacity Spread  `json:"goodput_of_capacity"`
	WastedFraction    *Spread `json:"wasted_fraction"`
	P50MS             *Spread `json:"p50_ms"`
	P99MS             *Spread `json:"p99_ms"`
	ResetP50MS        *Spread `json:"reset_p50_ms"`
	CPUPerAnswerUS    *Spread `json:"cpu_us_per_answer"`
	Reset             Spread  `json:"reset"`
	GaveUp            Spread  `json:"gave_up"`
}

// Spread is the median and range of a figure over runs.
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// spreadOf returns the spread of vs, or nil for none.
func spreadOf(vs []float64) *Spread {
	if len(vs) == 0 {
		return nil
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return &Spread{Median: med, Min: s[0], Max: s[len(s)-1]}
}

// RunOverload runs the experiment: every policy once a round, in turns.
// It returns an error only when a listener cannot be opened; when ctx ends
// first, the result holds the runs so far, the last one partial, and is
// marked Interrupted.
func RunOverload(ctx context.Context, cfg OverloadConfig) (res OverloadResult, err error) {
	cfg = cfg.withDefaults()
	res = OverloadResult{
		Transport: cfg.Transport, RatePerSec: cfg.Rate, CapacityPerSec: cfg.Capacity(),
		Load: cfg.Rate / cfg.Capacity(), DurationMS: ms(cfg.Duration), GiveUpMS: ms(cfg.GiveUp),
		ServiceMS: ms(cfg.Service), Workers: cfg.Workers, Rounds: cfg.Rounds,
	}
	defer func() { res.Summary = summarise(cfg, res.Runs) }()
	for round := 1; round <= cfg.Rounds; round++ {
		for _, p := range cfg.Policies {
			var run OverloadRun
			run, err = runPolicy(ctx, cfg, p, round)
			if err != nil {
				return res, fmt.Errorf("policy %s: %w", p.Name, err)
			}
			res.Runs = append(res.Runs, run)
			if run.Interrupted {
				res.Interrupted = true
				return res, nil
			}
		}
	}
	return res, nil
}

// summarise gives each policy's runs their medians and ranges.
func summarise(cfg OverloadConfig, runs []OverloadRun) []OverloadSummary {
	var out []OverloadSummary
	for _, p := range cfg.Policies {
		s := OverloadSummary{Policy: p.Name}
		var good, ofCap, wasted, p50, p99, resetP50, cpu, reset, gaveUp []float64
		for _, r := range runs {
			if r.Policy != p.Name || r.Interrupted {
				continue
			}
			s.Runs++
			good = append(good, r.GoodputPerSec)
			ofCap = append(ofCap, r.GoodputOfCapacity)
			reset = append(reset, float64(r.Reset))
			gaveUp = append(gaveUp, float64(r.GaveUp))
			if r.WastedFraction != nil {
				wasted = append(wasted, *r.WastedFraction)
			}
			if r.LatencyMS != nil {
				p50 = append(p50, r.LatencyMS.P50)
				p99 = append(p99, r.LatencyMS.P99)
			}
			if r.ResetMS != nil {
				resetP50 = append(resetP50, r.ResetMS.P50)
			}
			if r.CPUPerAnswerUS != nil {
				cpu = append(cpu, *r.CPUPerAnswerUS)
			}
		}
		if s.Runs == 0 {
			continue
		}
		s.GoodputPerSec, s.GoodputOfCapacity = *spreadOf(good), *spreadOf(ofCap)
		s.Reset, s.GaveUp = *spreadOf(reset), *spreadOf(gaveUp)
		s.WastedFraction, s.P50MS, s.P99MS = spreadOf(wasted), spreadOf(p50), spreadOf(p99)
		s.ResetP50MS, s.CPUPerAnswerUS = spreadOf(resetP50), spreadOf(cpu)
		out = append(out, s)
	}
	return out
}

// errNetListenOnNetstack says that the baseline has no netstack form.
var errNetListenOnNetstack = errors.New("net.Listen listens on this host's kernel only")

// overloadServer is the listener of one run and how clients reach it.
type overloadServer struct {
	l     net.Listener
	dial  func(ctx context.Context) (net.Conn, error)
	close func()
}

// openPolicy opens the listener of p.
func openPolicy(ctx context.Context, cfg OverloadConfig, p OverloadPolicy) (overloadServer, error) {
	if p.NetListen {
		if cfg.Transport != transport.Kernel {
			return overloadServer{}, errNetListenOnNetstack
		}
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return overloadServer{}, err
		}
		addr := l.Addr().String()
		var d net.Dialer
		return overloadServer{
			l:     l,
			dial:  func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp4", addr) },
			close: func() { l.Close() },
		}, nil
	}
	n := p.Backlog
	if n == 0 {
		n = backlog.MaxBacklog // what net.Listen asks for
	}
	srv, err := transport.Open(ctx, transport.Config{Transport: cfg.Transport, Backlog: n, Overload: p.Overload})
	if err != nil {
		return overloadServer{}, err
	}
	return overloadServer{l: srv.Listener, dial: srv.Dial, close: func() { srv.Close() }}, nil
}

// tally is what the clients and the application of one run saw, as they
// saw it.
type tally struct {
	mu        sync.Mutex
	offered   int
	answered  []event // client id, when the answer came
	reset     []event
	gaveUp    []event
	failed    int
	served    []event // what the application finished, when
	latencies []time.Duration
	resetAt   []time.Duration
}

type event struct {
	id uint64
	at time.Duration // since the run's start
}

// runPolicy runs one policy once.
func runPolicy(ctx context.Context, cfg OverloadConfig, p OverloadPolicy, round int) (OverloadRun, error) {
	srv, err := openPolicy(ctx, cfg, p)
	if err != nil {
		return OverloadRun{}, err
	}
	run := OverloadRun{Policy: p.Name, Round: round, Overload: p.Overload.String()}
	bl, isBL := srv.l.(backlog.Listener)
	if isBL {
		st := bl.Stats()
		run.Backlog, run.Capacity = st.Backlog, st.Capacity
	}

	t := &tally{}
	start := time.Now()
	cpu0, cpuOK := processCPU()

	// The application: Workers at a time, each Service long.
	stop := make(chan struct{})
	var app sync.WaitGroup
	for range cfg.Workers {
		app.Go(func() { serve(srv.l, cfg, start, t, stop) })
	}

	// The clients, open loop.
	cctx, cancel := context.WithCancel(ctx)
	var clients sync.WaitGroup
	report := func(done bool) {
		if cfg.Progress == nil {
			return
		}
		t.mu.Lock()
		pr := OverloadProgress{Policy: p.Name, Round: round, Rounds: cfg.Rounds, Elapsed: time.Since(start),
			Offered: t.offered, Answered: len(t.answered), Reset: len(t.reset), GaveUp: len(t.gaveUp), Done: done}
		t.mu.Unlock()
		cfg.Progress(pr)
	}
	arrivals := make(chan struct{})
	go func() {
		defer close(arrivals)
		lastReport := start
		for id := uint64(0); ; id++ {
			// On schedule whatever happened before: a client late for a
			// busy machine starts at once, not one gap after the last.
			at := time.Duration(float64(id) / cfg.Rate * float64(time.Second))
			if at >= cfg.Duration || !sleep(cctx, time.Until(start.Add(at))) {
				return
			}
			t.mu.Lock()
			t.offered++
			t.mu.Unlock()
			clients.Go(func() { client(cctx, srv.dial, id, start, cfg.GiveUp, t) })
			if now := time.Now(); now.Sub(lastReport) >= 200*time.Millisecond {
				lastReport = now
				report(false)
			}
		}
	}()
	<-arrivals
	clients.Wait()
	interrupted := ctx.Err() != nil
	cancel()
	cpu1, _ := processCPU()
	if isBL {
		st := bl.Stats()
		run.Listener = &st
	}
	close(stop)
	srv.close()
	app.Wait()
	report(true)

	run.Interrupted = interrupted
	fill(&run, cfg, t, cpu1-cpu0, cpuOK)
	return run, nil
}

// serve is one worker of the application: it accepts, reads the request,
// works Service long and answers, until the listener closes.
func serve(l net.Listener, cfg OverloadConfig, start time.Time, t *tally, stop <-chan struct{}) {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		var req [8]byte
		c.SetDeadline(time.Now().Add(2 * cfg.GiveUp))
		if _, err := io.ReadFull(c, req[:]); err != nil {
			c.Close()
			continue
		}
		// The work, whether or not the client is still there: most
		// servers do not look.
		tm := time.NewTimer(cfg.Service)
		select {
		case <-tm.C:
		case <-stop:
			tm.Stop()
			c.Close()
			return
		}
		c.Write(req[:])
		c.Close()
		t.mu.Lock()
		t.served = append(t.served, event{binary.BigEndian.Uint64(req[:]), time.Since(start)})
		t.mu.Unlock()
	}
}

// client is one client: it connects, sends its request and waits for the
// answer, all within giveUp of its start.
func client(ctx context.Context, dial func(context.Context) (net.Conn, error), id uint64, start time.Time, giveUp time.Duration, t *tally) {
	began := time.Now()
	deadline := began.Add(giveUp)
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	record := func(err error) {
		now := time.Now()
		e := event{id, now.Sub(start)}
		t.mu.Lock()
		defer t.mu.Unlock()
		switch {
		case err == nil:
			t.answered = append(t.answered, e)
			t.latencies = append(t.latencies, now.Sub(began))
		case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
			t.reset = append(t.reset, e)
			t.resetAt = append(t.resetAt, now.Sub(began))
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
			t.gaveUp = append(t.gaveUp, e)
		default:
			t.failed++
		}
	}
	c, err := dial(dctx)
	if err != nil {
		record(err)
		return
	}
	defer c.Close()
	c.SetDeadline(deadline)
	stopWatch := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stopWatch()
	var req, resp [8]byte
	binary.BigEndian.PutUint64(req[:], id)
	if _, err := c.Write(req[:]); err != nil {
		record(err)
		return
	}
	if _, err := io.ReadFull(c, resp[:]); err != nil {
		record(err)
		return
	}
	if resp != req {
		record(fmt.Errorf("answer %x to request %x", resp, req))
		return
	}
	record(nil)
}

// fill computes a run's figures from what its clients and application saw.
func fill(run *OverloadRun, cfg OverloadConfig, t *tally, cpu time.Duration, cpuOK bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	run.Offered = t.offered
	run.Answered = len(t.answered)
	run.Reset, run.GaveUp, run.Failed = len(t.reset), len(t.gaveUp), t.failed
	run.Served = len(t.served)
	answered := make(map[uint64]bool, len(t.answered))
	inWindow := 0
	for _, e := range t.answered {
		answered[e.id] = true
		if e.at <= cfg.Duration {
			inWindow++
		}
	}
	run.GoodputPerSec = float64(inWindow) / cfg.Duration.Seconds()
	run.GoodputOfCapacity = run.GoodputPerSec / cfg.Capacity()
	var wasted []event
	for _, e := range t.served {
		if !answered[e.id] {
			wasted = append(wasted, e)
		}
	}
	run.Wasted = len(wasted)
	if run.Served > 0 {
		f := float64(run.Wasted) / float64(run.Served)
		run.WastedFraction = &f
	}
	if len(t.latencies) > 0 {
		p := percentiles(t.latencies)
		run.LatencyMS = &p
	}
	if len(t.resetAt) > 0 {
		p := percentiles(t.resetAt)
		run.ResetMS = &p
	}
	if cpuOK && run.Answered > 0 {
		us := float64(cpu) / float64(time.Microsecond) / float64(run.Answered)
		run.CPUPerAnswerUS = &us
	}
	run.Latencies = slices.Clone(t.latencies)
	run.Timeline = timeline(cfg.Duration+cfg.GiveUp, t.answered, wasted, t.reset, t.gaveUp)
}

// timelineStep is the width of a timeline's slice.
const timelineStep = 100 * time.Millisecond

// timeline bins the events of a run into slices of timelineStep, as rates.
func timeline(span time.Duration, answered, wasted, reset, gaveUp []event) []OverloadSample {
	n := int(span/timelineStep) + 1
	out := make([]OverloadSample, n)
	perSec := 1 / timelineStep.Seconds()
	bin := func(es []event, add func(*OverloadSample)) {
		for _, e := range es {
			if i := int(e.at / timelineStep); i < n {
				add(&out[i])
			}
		}
	}
	bin(answered, func(s *OverloadSample) { s.AnsweredPerSec += perSec })
	bin(wasted, func(s *OverloadSample) { s.WastedPerSec += perSec })
	bin(reset, func(s *OverloadSample) { s.ResetPerSec += perSec })
	bin(gaveUp, func(s *OverloadSample) { s.GaveUpPerSec += perSec })
	for i := range out {
		out[i].MS = ms(time.Duration(i) * timelineStep)
	}
	return out
}
