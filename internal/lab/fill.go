package lab

import (
	"context"
	"net"
	"time"
)

// FillConfig describes clients filling someone's queue.
type FillConfig struct {
	// Network and Address say where to connect ("tcp", "127.0.0.1:8080").
	// Target, if not empty, is what the user named (a host name and port),
	// Address what it resolved to.
	Network, Address, Target string
	// Clients is how many clients connect.
	Clients int
	// Arrival is the time between one client's start and the next's.
	Arrival time.Duration
	// Timeout bounds each client's connect.
	Timeout time.Duration
	// Hold is how long the clients stay connected after the last connect
	// ended, to see whether the server resets them.
	Hold time.Duration
	// Progress, if not nil, is called about every 100 ms and at the end.
	Progress func(Progress)
}

// FillResult is what the clients met. Its keys are the lab's; the
// application's side (accepted) is not seen from here.
type FillResult struct {
	Target string `json:"target"`
	// Address is the address the clients connect to: Target's host
	// resolved.
	Address     string         `json:"address"`
	Interrupted bool           `json:"interrupted"`
	Clients     int            `json:"clients"`
	Connected   int            `json:"connected"`
	Refused     int            `json:"refused"`
	Reset       int            `json:"reset"`
	TimedOut    int            `json:"timed_out"`
	Failed      int            `json:"failed"`
	Unfinished  int            `json:"unfinished"`
	ConnectMS   Percentiles    `json:"connect_ms"`
	Errors      map[string]int `json:"errors,omitempty"`
	DurationMS  float64        `json:"duration_ms"`
	// ConnectTimes lists every connected client's connect time.
	ConnectTimes []time.Duration `json:"-"`
}

// Fill connects the clients with this host's TCP and reports what each met:
// the client side of a lab, against any listening address.
func Fill(ctx context.Context, cfg FillConfig) FillResult {
	start := time.Now()
	var d net.Dialer
	c := newCrowd(cfg.Clients, cfg.Arrival, cfg.Timeout, func(ctx context.Context) (net.Conn, error) {
		return d.DialContext(ctx, cfg.Network, cfg.Address)
	})
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	c.start(ctx)
	tick := time.NewTicker(100 * time.Millisecond)
	var resolvedAt time.Time
	report := func(done bool) {
		if cfg.Progress != nil {
			cfg.Progress(Progress{Personality: cfg.Target, Elapsed: time.Since(start), Counts: c.snapshot(), Done: done})
		}
	}
	for resolvedAt.IsZero() || time.Since(resolvedAt) < cfg.Hold {
		select {
		case <-ctx.Done():
			resolvedAt = time.Now().Add(-cfg.Hold)
			continue
		case <-tick.C:
		}
		if resolvedAt.IsZero() && c.allResolved() {
			resolvedAt = time.Now()
		}
		report(false)
	}
	tick.Stop()
	cancel()
	c.finish()
	counts, times, errs := c.outcome()
	report(true)
	target := cfg.Target
	if target == "" {
		target = cfg.Address
	}
	return FillResult{
		Target: target, Address: cfg.Address, Interrupted: parent.Err() != nil,
		Clients: counts.Clients, Connected: counts.Connected,
		Refused: counts.Refused, Reset: counts.Reset, TimedOut: counts.TimedOut,
		Failed: counts.Failed, Unfinished: counts.Unfinished,
		ConnectMS: percentiles(times), Errors: errs, DurationMS: ms(time.Since(start)),
		ConnectTimes: times,
	}
}
