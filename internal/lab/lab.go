// Package lab runs a listen queue experiment: a listener with a chosen
// personality and backlog, an application that accepts at a chosen pace, and
// clients that connect at once or one after another; it counts what every
// client met and records the queue over time.
package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/transport"
	"github.com/backlog-dev/backlog/kernel"
)

// Config describes one run.
type Config struct {
	// Personality is the system whose listen() rules the listener follows.
	Personality backlog.Personality
	// Transport is where the listener lives: transport.Netstack (the
	// default, in process) or transport.Kernel (this host's kernel, on
	// loopback).
	Transport string
	// Emulation, on the kernel transport, says how an emulated
	// personality is followed (kernel.ListenConfig.Emulation).
	Emulation kernel.Emulation
	// Backlog is the backlog requested with listen().
	Backlog int
	// Clients is how many clients connect. Zero means three times the
	// capacity.
	Clients int
	// Arrival is the time between one client's start and the next's. Zero
	// starts them all at once: a burst, which on Linux brings SYN cookies
	// into play once the SYN queue is full. Where the listener counts the
	// SYNs it drops, a client also waits until the server has answered or
	// dropped the one before, so that a busy machine runs the same
	// experiment as an idle one.
	Arrival time.Duration
	// Accept is how the application accepts.
	Accept AcceptPolicy
	// Timeout bounds each client's connect. Zero means 3 s.
	Timeout time.Duration
	// Relisten lists calls of listen() again during the run.
	Relisten []Relisten
	// Progress, if not nil, is called about every 100 ms while the run
	// goes on, and once at its end.
	Progress func(Progress)
}

// AcceptPolicy is the pace of the application's accept().
type AcceptPolicy struct {
	// Never: the application never accepts.
	Never bool
	// Rate is accepts per second; zero means as fast as connections come.
	Rate float64
	// After delays the first accept.
	After time.Duration
}

// String returns "none", "max", "10/s", or with a delay "10/s after 2s".
func (a AcceptPolicy) String() string {
	if a.Never {
		return "none"
	}
	s := "max"
	if a.Rate > 0 {
		s = fmt.Sprintf("%g/s", a.Rate)
	}
	if a.After > 0 {
		s += " after " + a.After.String()
	}
	return s
}

// Relisten is a call of listen() again: After the run's start, with
// Backlog, passed as it is (0 means 0).
type Relisten struct {
	After   time.Duration
	Backlog int
}

// String returns "2s:1".
func (r Relisten) String() string { return fmt.Sprintf("%s:%d", r.After, r.Backlog) }

// RelistenResult is what a call of listen() again did.
type RelistenResult struct {
	AtMS    float64 `json:"at_ms"`
	Backlog int     `json:"requested_backlog"`
	// Stored and Capacity are the listener's afterwards; Err, if not
	// empty, is why the call failed.
	Stored   int    `json:"backlog"`
	Capacity int    `json:"capacity"`
	Err      string `json:"error,omitempty"`
}

// Progress is the state of a run while it goes on.
type Progress struct {
	Personality string
	Elapsed     time.Duration
	Counts
	Queue    int
	Capacity int
	Done     bool
}

// Counts is what the clients met so far. Every client ends in exactly one
// of Connected, Refused, TimedOut, Failed and Unfinished.
type Counts struct {
	// Clients is how many clients take part.
	Clients int `json:"clients"`
	// Connected counts clients whose handshake completed.
	Connected int `json:"connected"`
	// Accepted counts connected clients the application accepted.
	Accepted int `json:"accepted"`
	// Refused counts clients whose connect was answered with a reset
	// (ECONNREFUSED).
	Refused int `json:"refused"`
	// Reset counts connected clients whose connection was then reset,
	// before or after connect() returned.
	Reset int `json:"reset"`
	// TimedOut counts clients whose connect got no answer in time.
	TimedOut int `json:"timed_out"`
	// Failed counts clients whose connect failed otherwise (no route, no
	// address, ...): Result.Errors names the errors.
	Failed int `json:"failed"`
	// Unfinished counts clients whose connect was still under way, or
	// not yet started, when the run was stopped: an interruption, or the
	// run's bound. They were not given their time, so they did not time
	// out.
	Unfinished int `json:"unfinished"`
}

// Answered is how many clients' connects have an outcome.
func (c Counts) Answered() int { return c.Connected + c.Refused + c.TimedOut + c.Failed }

// Result is what a run found.
type Result struct {
	Personality      string `json:"personality"`
	Transport        string `json:"transport"`
	RequestedBacklog int    `json:"requested_backlog"`
	Backlog          int    `json:"backlog"`
	Capacity         int    `json:"capacity"`
	Accept           string `json:"accept"`
	// Emulated is set on the kernel transport when the personality is
	// emulated rather than the kernel's own, and Emulation says how
	// (package kernel says what each way reproduces).
	Emulated  bool          `json:"emulated"`
	Emulation EmulationMode `json:"emulation"`
	// Interrupted is set when the run was stopped from outside before it
	// ended: what it holds is what had happened by then.
	Interrupted bool `json:"interrupted"`
	Counts
	// Waiting counts connected clients still neither accepted nor reset
	// at the end.
	Waiting int `json:"waiting"`
	// InQueue is how many connections the server's queue held at the end.
	// It is less than Waiting when clients believe they are connected and
	// the server holds nothing for them: a final ACK or cookie ACK dropped
	// on a full queue.
	InQueue int `json:"in_queue"`
	// ConnectMS summarises how long connected clients took to connect.
	ConnectMS Percentiles `json:"connect_ms"`
	// Errors counts connect failures by error.
	Errors map[string]int `json:"errors,omitempty"`
	// Stats is the listener's own account at the end.
	Stats backlog.Stats `json:"listener"`
	// DurationMS is how long the run took.
	DurationMS float64 `json:"duration_ms"`
	// Relistens is what each call of listen() again did.
	Relistens []RelistenResult `json:"relisten,omitempty"`
	// Timeline samples the queue and the counts over the run.
	Timeline []Sample `json:"timeline,omitempty"`
	// ConnectTimes lists every connected client's connect time.
	ConnectTimes []time.Duration `json:"-"`
	// Config is what the run was asked to do.
	Config Config `json:"-"`
}

// EmulationMode is how the kernel transport follows an emulated
// personality: at the SYN, each SYN decided before the kernel answers it,
// or after accept(), for the reason in Why.
type EmulationMode struct {
	AtSYN bool   `json:"at_syn"`
	Why   string `json:"why,omitempty"`
}

// Percentiles of a set of durations, in milliseconds. With Count 0 there
// is nothing to summarise: the percentiles are unknown, not 0, and JSON
// has null for them.
type Percentiles struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// MarshalJSON writes null for each percentile of an empty set.
func (p Percentiles) MarshalJSON() ([]byte, error) {
	if p.Count == 0 {
		return []byte(`{"count":0,"p50":null,"p90":null,"p99":null,"max":null}`), nil
	}
	type plain Percentiles
	return json.Marshal(plain(p))
}

// Sample is the state at one moment of a run. HalfOpen is nil where the
// transport cannot see half-open connections.
type Sample struct {
	MS       float64 `json:"ms"`
	Queue    int     `json:"queued_now"`
	HalfOpen *int    `json:"half_open_now"`
	Capacity int     `json:"capacity"`
	Counts
}

// RunAll runs the experiments side by side, as `backlog lab --personality
// all` does, and returns their results in order, or the first error of one
// that could not be set up. When ctx ends first, the results are those of
// the runs that had started, each marked Interrupted, and the error is nil.
func RunAll(ctx context.Context, cfgs []Config) ([]Result, error) {
	results := make([]Result, len(cfgs))
	errs := make([]error, len(cfgs))
	var wg sync.WaitGroup
	for i, cfg := range cfgs {
		wg.Go(func() { results[i], errs[i] = Run(ctx, cfg) })
	}
	wg.Wait()
	var ran []Result
	for i, err := range errs {
		switch {
		case err == nil:
			ran = append(ran, results[i])
		case ctx.Err() == nil:
			return nil, err
		}
	}
	return ran, nil
}

// sampleEvery is the timeline's resolution.
const sampleEvery = 10 * time.Millisecond

// Run runs one experiment and returns what every client met. It returns an
// error only when the experiment cannot be set up.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Timeout == 0 {
		cfg.Timeout = 3 * time.Second
	}
	if cfg.Transport == "" {
		cfg.Transport = transport.Netstack
	}
	srv, err := transport.Open(ctx, transport.Config{Transport: cfg.Transport, Personality: cfg.Personality, Backlog: cfg.Backlog, Emulation: cfg.Emulation})
	if err != nil {
		return Result{}, err
	}
	defer srv.Close()
	st := srv.Listener.Stats()
	if cfg.Clients == 0 {
		cfg.Clients = 3 * st.Capacity
	}
	r := &run{cfg: cfg, l: srv.Listener, start: time.Now(), crowd: newCrowd(cfg.Clients, cfg.Arrival, cfg.Timeout, srv.Dial)}
	if st.Observed(backlog.StatIgnored) {
		r.crowd.dropped = func() uint64 { return srv.Listener.Stats().Ignored }
	}
	res := r.execute(ctx)
	res.Emulated = srv.Emulated
	if kl, ok := srv.Listener.(*kernel.Listener); ok && srv.Emulated {
		mode, why := kl.Emulation()
		res.Emulation = EmulationMode{AtSYN: mode == kernel.EmulateAtSYN, Why: why}
	}
	res.Interrupted = ctx.Err() != nil
	res.Config = cfg
	return res, nil
}

type run struct {
	cfg   Config
	l     backlog.Listener
	start time.Time

	crowd *crowd

	mu        sync.Mutex
	accepted  int
	serverEnd []net.Conn
	timeline  []Sample
	relistens []RelistenResult
}

func (r *run) execute(ctx context.Context) Result {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The application.
	var app sync.WaitGroup
	if !r.cfg.Accept.Never {
		app.Add(1)
		go func() { defer app.Done(); r.acceptLoop(ctx) }()
	}
	if len(r.cfg.Relisten) > 0 {
		app.Add(1)
		go func() { defer app.Done(); r.relisten(ctx) }()
	}
	r.crowd.start(ctx)
	r.watch(ctx)

	cancel()
	final := r.sample(time.Now())
	stats := r.l.Stats() // before Close resets what waits
	r.mu.Lock()
	accepted := slices.Clone(r.serverEnd)
	r.mu.Unlock()
	for _, c := range accepted {
		c.Close()
	}
	r.crowd.finish()
	r.l.Close()
	app.Wait()
	res := r.result(final, stats)
	if r.cfg.Progress != nil {
		r.cfg.Progress(Progress{Personality: res.Personality, Elapsed: time.Since(r.start), Counts: res.Counts, Queue: final.Queue, Capacity: final.Capacity, Done: true})
	}
	return res
}

// watch samples the run until every connect has ended and then nothing
// has changed for a while, with the application done taking what it will
// take; or until the run's bound.
func (r *run) watch(ctx context.Context) {
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	var last Sample
	var quietSince, lastProgress time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		s := r.sample(now)
		if r.cfg.Progress != nil && now.Sub(lastProgress) >= 100*time.Millisecond {
			lastProgress = now
			r.cfg.Progress(Progress{Personality: r.cfg.Personality.String(), Elapsed: now.Sub(r.start), Counts: s.Counts, Queue: s.Queue, Capacity: s.Capacity})
		}
		if !r.crowd.allResolved() || !r.relistened() {
			continue
		}
		if s.Counts != last.Counts || s.Queue != last.Queue || deref(s.HalfOpen) != deref(last.HalfOpen) {
			last, quietSince = s, now
		}
		// Nothing more will be accepted once every connected client was,
		// or nothing is left in the queue: a client may believe it is
		// connected while the server holds nothing for it (a SYN-cookie
		// ACK dropped on a full queue).
		takenAll := r.cfg.Accept.Never || s.Connected == s.Accepted+s.Reset || (s.Queue == 0 && deref(s.HalfOpen) == 0)
		if takenAll && now.Sub(quietSince) >= 200*time.Millisecond {
			return
		}
		if now.Sub(r.start) > r.bound() {
			return
		}
	}
}

// relisten calls listen() again at each step's time, until ctx ends.
func (r *run) relisten(ctx context.Context) {
	for _, step := range r.cfg.Relisten {
		if !sleep(ctx, time.Until(r.start.Add(step.After))) {
			return
		}
		err := r.l.SetBacklog(step.Backlog)
		st := r.l.Stats()
		res := RelistenResult{AtMS: ms(time.Since(r.start)), Backlog: step.Backlog, Stored: st.Backlog, Capacity: st.Capacity}
		if err != nil {
			res.Err = err.Error()
		}
		r.mu.Lock()
		r.relistens = append(r.relistens, res)
		r.mu.Unlock()
	}
}

// relistened reports whether every call of listen() again has been made.
func (r *run) relistened() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.relistens) == len(r.cfg.Relisten)
}

// bound is the longest a run waits for the application after every connect
// has ended.
func (r *run) bound() time.Duration {
	d := time.Duration(r.cfg.Clients)*r.cfg.Arrival + r.cfg.Timeout + r.cfg.Accept.After
	for _, step := range r.cfg.Relisten {
		d = max(d, step.After+r.cfg.Timeout)
	}
	if r.cfg.Accept.Rate > 0 {
		d += time.Duration(float64(r.cfg.Clients) / r.cfg.Accept.Rate * float64(time.Second))
	}
	return d + time.Second
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// acceptLoop is the application: it accepts at the configured pace and
// keeps what it accepts open until the run ends. It returns when the
// listener closes.
func (r *run) acceptLoop(ctx context.Context) {
	pl := Paced(r.l, r.cfg.Accept)
	for {
		c, err := pl.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		// Under the lock: Run ends the run and then takes the connections
		// to close under it, so one accepted before the end is among them
		// and one after is closed here, never kept past the run.
		r.mu.Lock()
		if ctx.Err() != nil {
			r.mu.Unlock()
			c.Close() // accepted after the run ended: not counted
			continue
		}
		r.accepted++
		r.serverEnd = append(r.serverEnd, c)
		r.mu.Unlock()
	}
}

func (r *run) sample(now time.Time) Sample {
	st := r.l.Stats()
	counts := r.crowd.snapshot()
	r.mu.Lock()
	defer r.mu.Unlock()
	counts.Accepted = r.accepted
	s := Sample{MS: ms(now.Sub(r.start)), Queue: st.Len, Capacity: st.Capacity, Counts: counts}
	if st.Observed(backlog.StatHalfOpen) {
		h := st.HalfOpen
		s.HalfOpen = &h
	}
	r.timeline = append(r.timeline, s)
	return s
}

func (r *run) result(final Sample, st backlog.Stats) Result {
	counts, times, errs := r.crowd.outcome()
	r.mu.Lock()
	defer r.mu.Unlock()
	counts.Accepted = r.accepted
	res := Result{
		Personality:      r.cfg.Personality.String(),
		Transport:        r.cfg.Transport,
		RequestedBacklog: r.cfg.Backlog,
		Backlog:          st.Backlog,
		Capacity:         st.Capacity,
		Accept:           r.cfg.Accept.String(),
		Counts:           counts,
		Stats:            st,
		DurationMS:       ms(time.Since(r.start)),
		Timeline:         r.timeline,
		Relistens:        slices.Clone(r.relistens),
		ConnectTimes:     times,
		ConnectMS:        percentiles(times),
		Errors:           errs,
	}
	res.Waiting = res.Connected - res.Accepted - res.Reset
	res.InQueue = final.Queue
	return res
}

func deref(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e4) / 100 }

// percentiles returns the nearest-rank percentiles of ds.
func percentiles(ds []time.Duration) Percentiles {
	if len(ds) == 0 {
		return Percentiles{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p/100*float64(len(s)))) - 1
		return ms(s[max(i, 0)])
	}
	return Percentiles{Count: len(s), P50: rank(50), P90: rank(90), P99: rank(99), Max: ms(s[len(s)-1])}
}
