package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/backlog-dev/backlog/internal/transport"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
)

const probeUsage = `Usage: backlog probe [flags]

Learns what this host's kernel does with the listen backlog, on loopback,
and compares it with a personality's prediction. For each backlog it
listens with exactly that backlog, reads back what the kernel stored,
connects clients one after another without accepting any, and counts how
many complete the handshake and wait in the queue. The first client left
without an answer is watched: is it refused, or ignored, and when does it
send its SYN again? Each check says "matches" or "differs", with both
values. The probe exits 1 when a check differs. Linux only.

  --backlog N          a backlog to probe (repeatable; default 0, 1, 5 and
                       one more than net.core.somaxconn, to show the clamp)
  --personality NAME   the rules to compare with (default: this host's,
                       with its sysctls)
  --timeout D          how long a client waits for an answer before it
                       counts as left out (default 300ms)
  --watch D            how long the left-out client is watched, from its
                       connect (default 3.5s: the retransmissions at about
                       1, 2 and 3 s on Linux 6.5 and later; at most 3m)
  --max-clients N      do not fill a queue that needs more clients than
                       this (default 5000)
  --json               print the facts as JSON
`

// probeFlags holds the flags of one probe command.
type probeFlags struct {
	backlogs    listFlag
	personality string
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
	Queue int `json:"queue"`
	// Drops is the listener's own drop count at the end of the watch.
	Drops    uint64          `json:"drops"`
	Overflow overflowMeasure `json:"overflow"`
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
	// Retransmits are the times the client sent its SYN again, and RTO its
	// retransmission timeout right after each (tcpi_rto).
	Retransmits []time.Duration `json:"-"`
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
}

func runProbe(ctx context.Context, e *env, args []string) error {
	var f probeFlags
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.Var(&f.backlogs, "backlog", "")
	fs.StringVar(&f.personality, "personality", "", "")
	fs.DurationVar(&f.timeout, "timeout", 300*time.Millisecond, "")
	fs.DurationVar(&f.watch, "watch", 3500*time.Millisecond, "")
	fs.IntVar(&f.maxClients, "max-clients", 5000, "")
	fs.BoolVar(&f.json, "json", false, "")
	rest, err := parseFlags(e, fs, probeUsage, args)
	if err != nil {
		return helpIsNotAnError(err)
	}
	switch {
	case len(rest) > 0:
		return usagef("probe", "unexpected argument %q; give backlogs with --backlog N", rest[0])
	case f.timeout < time.Millisecond || f.timeout > 10*time.Second:
		return usagef("probe", "--timeout must be from 1ms to 10s")
	case f.watch < 0 || f.watch > maxProbeWatch:
		return usagef("probe", "--watch must be from 0 to %s", maxProbeWatch)
	case f.maxClients < 1 || f.maxClients > maxClients:
		return usagef("probe", "--max-clients must be from 1 to %d", maxClients)
	case len(f.backlogs) > maxProbeBacklogs:
		return usagef("probe", "at most %d --backlog values", maxProbeBacklogs)
	}
	requests := make([]int, len(f.backlogs))
	for i, s := range f.backlogs {
		n, err := strconv.ParseInt(s, 10, 32)
		if err != nil {
			return usagef("probe", "--backlog %q: give an integer from %d to %d", s, int32(-1<<31), int32(1<<31-1))
		}
		requests[i] = int(n)
	}
	p := transport.Host()
	if f.personality != "" {
		ps, err := resolve("probe", []string{f.personality})
		if err != nil {
			return err
		}
		if len(ps) != 1 {
			return usagef("probe", "--personality takes one system, not %q", f.personality)
		}
		p = ps[0]
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
	if err := errors.Join(errs...); err != nil {
		return err
	}
	var delta *kernel.Counters
	if after, err := kernel.ReadCounters(); err == nil && countersErr == nil {
		d := after.Sub(before)
		delta = &d
	}

	out := probeJSON{
		Kernel: kernelRelease(), Personality: p.String(), Somaxconn: somaxconn,
		TimeoutS: f.timeout.Seconds(), WatchS: window.Seconds(), Counters: delta,
		Checks: []probeCheck{},
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

// retransmitTolerance is how far a measured retransmission may lie from
// the predicted one and still match: 50 ms and 5%. Linux arms its timers on
// a timer wheel that rounds a 1 s expiry up by a few percent (on this
// project's reference host each gap is 1.024 s), and the probe looks every
// probeTick.
func retransmitTolerance(at time.Duration) time.Duration {
	return 50*time.Millisecond + at/20
}

// comparedRetransmits returns the predicted retransmissions that fall
// clearly within the window, and the measured ones to compare with them:
// a measured time that matches a predicted one too close to the end of the
// window to be sure of is left out, as that predicted one is.
func comparedRetransmits(predicted, measured []time.Duration, window time.Duration) (want, got []time.Duration) {
	var edge []time.Duration
	for _, t := range predicted {
		tol := retransmitTolerance(t)
		switch {
		case t+tol <= window:
			want = append(want, t)
		case t-tol <= window:
			edge = append(edge, t)
		}
	}
	for _, o := range measured {
		nearEdge := false
		for _, t := range edge {
			if o >= t-retransmitTolerance(t) {
				nearEdge = true
			}
		}
		if !nearEdge {
			got = append(got, o)
		}
	}
	return want, got
}

// sameTimes reports whether each measured time is within tolerance of the
// predicted one in the same place.
func sameTimes(want, got []time.Duration) bool {
	if len(want) != len(got) {
		return false
	}
	for i := range want {
		if d := got[i] - want[i]; d > retransmitTolerance(want[i]) || -d > retransmitTolerance(want[i]) {
			return false
		}
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
	storedNote := ""
	if !m.ReadBack {
		storedNote = " (computed)"
	}
	check("stored backlog", strconv.Itoa(m.Stored)+storedNote, strconv.Itoa(stored), m.Stored == stored)
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
	wantAt, gotAt := comparedRetransmits(p.ClientSYN.At, o.Retransmits, window)
	check("SYN retransmits", measuredTimes(gotAt), scheduleTimes(wantAt), sameTimes(wantAt, gotAt))
	sent := uint64(1 + len(o.Retransmits))
	check("SYNs dropped", strconv.FormatUint(m.Drops, 10), strconv.FormatUint(sent, 10), m.Drops == sent)
	if giveUp := p.ClientSYN.GiveUp; giveUp+retransmitTolerance(giveUp) <= window {
		ended := "still waiting"
		if o.Ended > 0 {
			ended = fmt.Sprintf("%s at %.2fs", o.Error, o.Ended.Seconds())
		}
		ok := o.Error == "ETIMEDOUT" && sameTimes([]time.Duration{giveUp}, []time.Duration{o.Ended})
		check("client gives up", ended, "ETIMEDOUT at "+shortSeconds(giveUp), ok)
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

func measuredTimes(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = fmt.Sprintf("%.2fs", d.Seconds())
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
	w := e.stdout
	fmt.Fprintf(w, "Probing Linux %s on 127.0.0.1 against %s (net.core.somaxconn %d).\n", r.Kernel, r.Personality, r.Somaxconn)
	fmt.Fprintf(w, "Clients connect one after another and nobody accepts; the first without an answer after %s is watched for %s.\n\n", timeout, window)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKLOG\tCHECK\tMEASURED\tPREDICTED\tVERDICT")
	for _, c := range r.Checks {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", c.Backlog, c.Check, c.Measured, c.Predicted, c.Verdict)
	}
	tw.Flush()
	fmt.Fprintln(w)
	if c := r.Counters; c != nil {
		fmt.Fprintf(w, "Host counters during the probe: ListenOverflows +%d, ListenDrops +%d, TCPReqQFullDrop +%d, SyncookiesSent +%d.\n",
			c.ListenOverflows, c.ListenDrops, c.TCPReqQFullDrop, c.SyncookiesSent)
	}
	if r.Differ == 0 {
		fmt.Fprintf(w, "All %d checks match %s.\n", measured(r.Checks), r.Personality)
		return
	}
	fmt.Fprintf(w, "%d of %d checks differ from %s.\n", r.Differ, measured(r.Checks), r.Personality)
}
