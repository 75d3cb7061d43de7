package cli

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/backlog-dev/backlog/internal/transport"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
)

// probeFlags holds the flags of one probe command.
type probeFlags struct {
	backlogs    []request
	personality []backlog.Personality
	timeout     time.Duration
	watch       time.Duration
	maxClients  int
	json        bool
}

// Bounds of the probe, so that it ends within minutes and holds a bounded
// number of sockets: at most maxProbeBacklogs listeners, each filled with at
// most --max-clients clients, and a watch no longer than maxProbeWatch
// (enough for a Linux client to give up: 131 s with the defaults).
const (
	maxProbeBacklogs = 16
	maxProbeWatch    = 3 * time.Minute
	probeTick        = 5 * time.Millisecond
)

// probeConfig is what the probe of one listener needs.
type probeConfig struct {
	requested  int
	capacity   int // predicted
	timeout    time.Duration
	window     time.Duration // how long the left-out client is watched
	maxClients int
}

// probeMeasure is what the kernel did with one listener.
type probeMeasure struct {
	Address  string `json:"address"`
	Stored   int    `json:"stored"`
	ReadBack bool   `json:"read_back"`
	// Filled is false when the queue was not filled, for the reason in
	// NotFilled: it needs more clients than --max-clients, or the process
	// ran out of descriptors.
	Filled    bool   `json:"filled"`
	NotFilled string `json:"not_filled,omitempty"`
	// Connected counts the clients that completed the handshake and were
	// seen in the queue; NotQueued those whose connect succeeded but whose
	// final ACK the listener did not queue within queueWait.
	Connected int `json:"connected"`
	NotQueued int `json:"connected_not_queued"`
	// Queue is the queue length read back once the queue was full.
	Queue int `json:"queued_now"`
	// Drops is the listener's own drop count at the end of the watch.
	Drops    uint64          `json:"drops"`
	Overflow overflowMeasure `json:"overflow"`
	// Interrupted is set when the probe was stopped before this
	// listener's measure was complete: only the stored backlog is known.
	Interrupted bool `json:"interrupted"`
}

// overflowMeasure is what the first client left out met.
type overflowMeasure struct {
	// Outcome is "ignored" (no answer while watched, or ETIMEDOUT when the
	// client gave up), "refused" (ECONNREFUSED), "reset" (ECONNRESET),
	// "connected", "failed" (any other error), or "" when every client got
	// in.
	Outcome string `json:"outcome"`
	// Error names the error connect() ended with, if it ended.
	Error string `json:"error,omitempty"`
	// Ended is when connect() ended, from the client's connect() call;
	// zero while it still waited at the end of the watch.
	Ended time.Duration `json:"-"`
	// Retransmits are the times the client sent its SYN again, each
	// known to lie between After and Retransmits (the probe's last look
	// before it, and its first look after it), and RTO its retransmission
	// timeout right after each (tcpi_rto).
	Retransmits []time.Duration `json:"-"`
	After       []time.Duration `json:"-"`
	RTO         []time.Duration `json:"-"`
}

// probeCheck is one comparison of a measurement with a prediction.
type probeCheck struct {
	Backlog   int    `json:"backlog"`
	Check     string `json:"check"`
	Measured  string `json:"measured"`
	Predicted string `json:"predicted"`
	// Verdict is "matches", "differs" or "skipped" (not measured).
	Verdict string `json:"verdict"`
}

type probeListenerJSON struct {
	Requested         int `json:"requested"`
	PredictedStored   int `json:"predicted_stored"`
	PredictedCapacity int `json:"predicted_capacity"`
	probeMeasure
	OverflowPredicted    string    `json:"overflow_predicted"`
	RetransmitS          []float64 `json:"retransmit_s"`
	RTOS                 []float64 `json:"rto_s"`
	PredictedRetransmitS []float64 `json:"predicted_retransmit_s"`
	EndedS               *float64  `json:"ended_s"`
}

type probeJSON struct {
	Kernel      string              `json:"kernel"`
	Personality string              `json:"personality"`
	Somaxconn   int                 `json:"somaxconn"`
	TimeoutS    float64             `json:"timeout_s"`
	WatchS      float64             `json:"watch_s"`
	Listeners   []probeListenerJSON `json:"listeners"`
	Counters    *kernel.Counters    `json:"counters_delta"`
	Checks      []probeCheck        `json:"checks"`
	Differ      int                 `json:"differ"`
	// Interrupted is set when the probe was stopped before its end: the
	// checks of a listener it had not finished are skipped.
	Interrupted bool `json:"interrupted"`
}

func probeCommand() (*flags, runFunc) {
	fl := newFlags("probe", "[flags]", `
Learns what this host's kernel does with the listen backlog, on loopback,
and compares it with a personality's prediction. For each backlog it
listens with exactly that backlog, reads back what the kernel stored,
connects clients one after another without accepting any, and counts how
many complete the handshake and wait in the queue. The first client left
without an answer is watched: is it refused, or ignored, and when does it
send its SYN again? Each check says "matches" or "differs", with both
values; a retransmission matches when it falls within the kernel's timer
granularity of its time (the timer wheel rounds a timer up: up to 90 ms
for a 1 s timer at HZ 100) and the probe's own look at it. The probe exits
1 when a check differs, 130 when interrupted. Linux only.`)
	var f probeFlags
	fl.add("backlog", "N", "a backlog to probe: an integer, SOMAXCONN or SOMAXCONN_HINT(N); repeatable", "0, 1, 5 and net.core.somaxconn+1, to show the clamp", backlogListValue{&f.backlogs})
	fl.personalityFlag(&f.personality, "the rules to compare with", "this host's, with its sysctls", true)
	fl.durationFlag(&f.timeout, "timeout", "how long a client waits for an answer before it counts as left out", 300*time.Millisecond, time.Millisecond, 10*time.Second)
	fl.durationFlag(&f.watch, "watch", "how long the left-out client is watched, from its connect: 3.5s sees the retransmissions at about 1, 2 and 3 s of Linux 6.5 and later", 3500*time.Millisecond, 0, maxProbeWatch)
	fl.intFlag(&f.maxClients, "max-clients", "N", "do not fill a queue that needs more clients than this", 5000, 1, maxClients, "a number of clients")
	fl.switchFlag(&f.json, "json", "print the facts as JSON")
	return fl, func(ctx context.Context, e *env, args []string) error {
		if len(args) > 0 {
			return usagef("probe", "unexpected argument %q; give backlogs with --backlog N", args[0])
		}
		if len(f.backlogs) > maxProbeBacklogs {
			return usagef("probe", "--backlog: at most %d values; %d were given", maxProbeBacklogs, len(f.backlogs))
		}
		return runProbe(ctx, e, f)
	}
}

func runProbe(ctx context.Context, e *env, f probeFlags) error {
	p := transport.Host()
	if len(f.personality) == 1 {
		p = f.personality[0]
	}
	requests := make([]int, len(f.backlogs))
	for i, r := range f.backlogs {
		requests[i] = r.value(p)
	}
	somaxconn, somaxErr := kernel.Somaxconn()
	if len(requests) == 0 {
		requests = []int{0, 1, 5}
		if somaxErr == nil {
			requests = append(requests, somaxconn+1)
		}
	}
	if err := probeSupported(); err != nil {
		return err
	}

	window := max(f.watch, f.timeout)
	before, countersErr := kernel.ReadCounters()
	measures := make([]probeMeasure, len(requests))
	errs := make([]error, len(requests))
	var wg sync.WaitGroup
	for i, n := range requests {
		wg.Go(func() {
			measures[i], errs[i] = probeListener(ctx, probeConfig{
				requested: n, capacity: p.CapacityOf(p.Stored(n)),
				timeout: f.timeout, window: window, maxClients: f.maxClients,
			})
		})
	}
	wg.Wait()
	interrupted := ctx.Err() != nil
	for i, err := range errs {
		switch {
		case err == nil:
		case interrupted && ctx.Err() != nil:
			// Stopped before it listened: nothing measured.
			measures[i] = probeMeasure{Interrupted: true}
		default:
			return err
		}
	}
	var delta *kernel.Counters
	if after, err := kernel.ReadCounters(); err == nil && countersErr == nil {
		d := after.Sub(before)
		delta = &d
	}

	out := probeJSON{
		Kernel: kernelRelease(), Personality: p.String(), Somaxconn: somaxconn,
		TimeoutS: f.timeout.Seconds(), WatchS: window.Seconds(), Counters: delta,
		Checks: []probeCheck{}, Interrupted: interrupted,
	}
	for i, n := range requests {
		m := measures[i]
		out.Listeners = append(out.Listeners, listenerJSON(p, n, m, window))
		for _, c := range probeChecks(p, n, m, window) {
			out.Checks = append(out.Checks, c)
			if c.Verdict == "differs" {
				out.Differ++
			}
		}
	}
	if f.json {
		if err := writeJSON(e, out); err != nil {
			return err
		}
	} else {
		printProbe(e, out, f.timeout, window)
	}
	if interrupted {
		return errInterrupted
	}
	if out.Differ > 0 {
		return fmt.Errorf("%d of %d checks differ from %s", out.Differ, measured(out.Checks), p)
	}
	return nil
}

// queueWait bounds how long the probe waits for a connected client to show
// in the listener's queue: on loopback the final ACK is processed a moment
// after the client's connect() returns.
const queueWait = 100 * time.Millisecond

// queued waits up to queueWait for the listener's queue to hold n.
func queued(ln *kernel.Listener, n int) bool {
	deadline := time.Now().Add(queueWait)
	for {
		if ln.Stats().Len >= n {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
}

// kernelRelease is the running kernel's release, as uname -r prints it.
func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// expectedOutcome is what a client meets, in the probe's words, when it
// connects to a full queue under p's rules. The probe's clients all
// complete their handshake, so no half-open connection is there to evict.
func expectedOutcome(p backlog.Personality) string {
	switch p.FullVerdict() {
	case "refuse":
		return "refused"
	case "cookie":
		return "connected"
	}
	return "ignored"
}

// timerLate bounds how late a kernel timer of duration d fires. The
// timer wheel (kernel/time/timer.c) files a timer d jiffies away in a
// level whose granularity grows eightfold every level (levels start at 63,
// 504, 4032, ... jiffies) and rounds its expiry up to that granularity;
// the tick that runs it comes up to a jiffy later, and the softirq that
// runs the timer may wait timerSlack more on a busy machine. HZ is not
// known from user space, so the worst of the usual values counts: a 1 s
// timer is up to 90 ms late at HZ 100, 36 ms at HZ 250, 65 ms at HZ 1000.
func timerLate(d time.Duration) time.Duration {
	var worst time.Duration
	for _, hz := range []time.Duration{100, 250, 300, 1000} {
		jiffy := time.Second / hz
		delta := int64((d + jiffy - 1) / jiffy)
		gran := int64(1)
		for start := int64(63); delta >= start; start <<= 3 {
			gran <<= 3
		}
		worst = max(worst, time.Duration(gran+1)*jiffy)
	}
	return worst + timerSlack
}

// timerEarly bounds how early a timer fires against the wall clock: it is
// armed in whole jiffies from a moment within one (10 ms at HZ 100).
const timerEarly = 10 * time.Millisecond

// timerSlack is what the timer softirq may wait on a busy machine.
const timerSlack = 20 * time.Millisecond

// span is a time known to lie between lo and hi.
type span struct{ lo, hi time.Duration }

func (a span) meets(b span) bool { return a.lo <= b.hi && b.lo <= a.hi }

// predictedSpans returns, for each retransmission of a schedule, where it
// may fall: from each one's predicted time less what each timer may be
// early, to it plus what each may be late, the timers running one after
// another.
func predictedSpans(at []time.Duration) []span {
	var out []span
	var prev, early, late time.Duration
	for _, t := range at {
		early += timerEarly
		late += timerLate(t - prev)
		out = append(out, span{t - early, t + late})
		prev = t
	}
	return out
}

// comparedRetransmits returns the predicted retransmissions that fall
// surely within the window, and as many measured ones, in order: a
// predicted one that may or may not fall within it is left out, as is a
// measured one in its place.
func comparedRetransmits(predicted []time.Duration, measured []span, window time.Duration) (want []time.Duration, got []span) {
	spans := predictedSpans(predicted)
	maybe := 0
	for i, sp := range spans {
		switch {
		case sp.hi <= window:
			want = append(want, predicted[i])
		case sp.lo <= window:
			maybe++
		}
	}
	got = measured
	if len(got) > len(want) && len(got) <= len(want)+maybe {
		got = got[:len(want)]
	}
	return want, got
}

// sameTimes reports whether each measured retransmission can be the
// predicted one in its place: the gap since the one before it (or since
// connect) meets the predicted gap, within what the timers and the
// probe's looks allow.
func sameTimes(want []time.Duration, got []span) bool {
	if len(want) != len(got) {
		return false
	}
	var prevWant time.Duration
	prevGot := span{}
	for i := range want {
		gap := want[i] - prevWant
		predicted := span{gap - timerEarly, gap + timerLate(gap)}
		measured := span{got[i].lo - prevGot.hi, got[i].hi - prevGot.lo}
		if !predicted.meets(measured) {
			return false
		}
		prevWant, prevGot = want[i], got[i]
	}
	return true
}

// probeChecks compares what one listener measured with p's prediction.
func probeChecks(p backlog.Personality, n int, m probeMeasure, window time.Duration) []probeCheck {
	stored, capacity := p.Listen(n)
	var checks []probeCheck
	check := func(name, measured, predicted string, ok bool) {
		v := "differs"
		if ok {
			v = "matches"
		}
		checks = append(checks, probeCheck{Backlog: n, Check: name, Measured: measured, Predicted: predicted, Verdict: v})
	}
	skip := func(name, why, predicted string) {
		checks = append(checks, probeCheck{Backlog: n, Check: name, Measured: why, Predicted: predicted, Verdict: "skipped"})
	}
	if m.Interrupted && m.Address == "" {
		skip("stored backlog", "interrupted", strconv.Itoa(stored))
		return checks
	}
	storedNote := ""
	if !m.ReadBack {
		storedNote = " (computed)"
	}
	check("stored backlog", strconv.Itoa(m.Stored)+storedNote, strconv.Itoa(stored), m.Stored == stored)
	if m.Interrupted {
		skip("can wait", "interrupted", strconv.Itoa(capacity))
		return checks
	}
	if !m.Filled {
		skip("can wait", "not filled ("+m.NotFilled+")", strconv.Itoa(capacity))
		return checks
	}
	o := m.Overflow
	if o.Outcome == "" {
		check("can wait", fmt.Sprintf("more than %d", m.Connected), strconv.Itoa(capacity), false)
		return checks
	}
	canWait := strconv.Itoa(m.Connected)
	if m.NotQueued > 0 {
		canWait += fmt.Sprintf(" (+%d connected, not queued)", m.NotQueued)
	}
	check("can wait", canWait, strconv.Itoa(capacity), m.Connected == capacity && m.NotQueued == 0)
	check("queue read back", strconv.Itoa(m.Queue), strconv.Itoa(capacity), m.Queue == capacity)
	want := expectedOutcome(p)
	check("when full", o.Outcome, want, o.Outcome == want)
	if want != "ignored" || o.Outcome != "ignored" {
		return checks
	}
	wantAt, gotAt := comparedRetransmits(p.ClientSYN.At, o.spans(), window)
	check("SYN retransmits", measuredSpans(gotAt), scheduleTimes(wantAt), sameTimes(wantAt, gotAt))
	sent := uint64(1 + len(o.Retransmits))
	check("SYNs dropped", strconv.FormatUint(m.Drops, 10), strconv.FormatUint(sent, 10), m.Drops == sent)
	giveUpAt := predictedSpans(append(slices.Clone(p.ClientSYN.At), p.ClientSYN.GiveUp))
	if giveUp := giveUpAt[len(giveUpAt)-1]; giveUp.hi <= window {
		ended := "still waiting"
		if o.Ended > 0 {
			ended = fmt.Sprintf("%s at %.2fs", o.Error, o.Ended.Seconds())
		}
		ok := o.Error == "ETIMEDOUT" && giveUp.meets(span{o.Ended - probeTick, o.Ended})
		check("client gives up", ended, "ETIMEDOUT at "+shortSeconds(p.ClientSYN.GiveUp), ok)
	}
	return checks
}

// measured counts the checks that were not skipped.
func measured(cs []probeCheck) int {
	n := 0
	for _, c := range cs {
		if c.Verdict != "skipped" {
			n++
		}
	}
	return n
}

// spans pairs the retransmissions' times with the looks before them.
func (o overflowMeasure) spans() []span {
	out := make([]span, len(o.Retransmits))
	for i := range out {
		out[i] = span{o.After[i], o.Retransmits[i]}
	}
	return out
}

// measuredSpans prints each retransmission at the look that saw it, and
// with the look before it when the two are more than 10 ms apart (the
// probe was kept from looking): "1.02s 1.00-1.18s".
func measuredSpans(ss []span) string {
	if len(ss) == 0 {
		return "none"
	}
	s := make([]string, len(ss))
	for i, sp := range ss {
		s[i] = fmt.Sprintf("%.2fs", sp.hi.Seconds())
		if sp.hi-sp.lo > 10*time.Millisecond {
			s[i] = fmt.Sprintf("%.2f-%.2fs", sp.lo.Seconds(), sp.hi.Seconds())
		}
	}
	return strings.Join(s, " ")
}

func scheduleTimes(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = shortSeconds(d)
	}
	return strings.Join(s, " ")
}

func shortSeconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s" }

func secondsOf(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.Seconds()
	}
	return out
}

func listenerJSON(p backlog.Personality, n int, m probeMeasure, window time.Duration) probeListenerJSON {
	stored, capacity := p.Listen(n)
	var predicted []time.Duration
	for _, t := range p.ClientSYN.At {
		if t <= window {
			predicted = append(predicted, t)
		}
	}
	j := probeListenerJSON{
		Requested: n, PredictedStored: stored, PredictedCapacity: capacity, probeMeasure: m,
		OverflowPredicted: expectedOutcome(p), RetransmitS: secondsOf(m.Overflow.Retransmits),
		RTOS: secondsOf(m.Overflow.RTO), PredictedRetransmitS: secondsOf(predicted),
	}
	if m.Overflow.Ended > 0 {
		s := m.Overflow.Ended.Seconds()
		j.EndedS = &s
	}
	return j
}

func printProbe(e *env, r probeJSON, timeout, window time.Duration) {
	w, width := e.stdout, outputWidth(e.stdout)
	if r.Interrupted {
		para(w, width, "", "Interrupted: the checks of listeners the probe had not finished are skipped.")
		fmt.Fprintln(w)
	}
	para(w, width, "", fmt.Sprintf("Probing Linux %s on 127.0.0.1 against %s (net.core.somaxconn %d).", r.Kernel, r.Personality, r.Somaxconn))
	para(w, width, "", fmt.Sprintf("Clients connect one after another and nobody accepts; the first without an answer after %s is watched for %s.", durationText(timeout), durationText(window)))
	fmt.Fprintln(w)
	t := &table{cols: []column{
		{name: "BACKLOG", right: true}, {name: "CHECK"}, {name: "MEASURED", wrap: true, min: 12},
		{name: "PREDICTED", wrap: true, min: 12}, {name: "VERDICT"},
	}}
	for _, c := range r.Checks {
		t.add(strconv.Itoa(c.Backlog), c.Check, c.Measured, c.Predicted, c.Verdict)
	}
	t.write(w, width)
	fmt.Fprintln(w)
	if c := r.Counters; c != nil {
		para(w, width, "", fmt.Sprintf("Host counters during the probe: ListenOverflows +%d, ListenDrops +%d, TCPReqQFullDrop +%d, SyncookiesSent +%d.",
			c.ListenOverflows, c.ListenDrops, c.TCPReqQFullDrop, c.SyncookiesSent))
	}
	switch {
	case r.Differ == 0 && r.Interrupted:
		fmt.Fprintf(w, "The %d checks made match %s.\n", measured(r.Checks), r.Personality)
	case r.Differ == 0:
		fmt.Fprintf(w, "All %d checks match %s.\n", measured(r.Checks), r.Personality)
	default:
		fmt.Fprintf(w, "%d of %d checks differ from %s.\n", r.Differ, measured(r.Checks), r.Personality)
	}
}
