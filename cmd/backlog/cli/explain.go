package cli

import (
	"context"
	"math"
	"strconv"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/transport"
)

// request is one BACKLOG argument: a number, or SOMAXCONN, whose value
// depends on the personality.
type request struct {
	somaxconn bool
	n         int
}

func (r request) value(p backlog.Personality) int {
	if r.somaxconn {
		return p.SOMAXCONN
	}
	return r.n
}

// String returns the request as it was given: "5", "SOMAXCONN".
func (r request) String() string {
	if r.somaxconn {
		return "SOMAXCONN"
	}
	return strconv.Itoa(r.n)
}

type explainJSON struct {
	Software       string `json:"software,omitempty"`
	Personality    string `json:"personality"`
	Requested      int    `json:"requested"`
	Backlog        int    `json:"backlog"`
	Capacity       int    `json:"capacity"`
	HalfOpenLimit  int    `json:"half_open_limit"`
	OnFull         string `json:"on_full"`
	OnFinalACKFull string `json:"on_final_ack_full"`
	Relisten       string `json:"relisten"`
}

func explainCommand() (*flags, runFunc) {
	f := newFlags("explain", "[flags] BACKLOG...", `
Shows what listen(BACKLOG) becomes: the backlog each system stores, how many
completed connections can then wait, what a connection meets when the queue
is full, and what listen() again does. BACKLOG is an integer (negative ones
too), SOMAXCONN (each system's own value), or SOMAXCONN_HINT(N) (Windows).
With --defaults, instead of BACKLOG: the backlog other software passes when
its user chooses none (Go, Python, nginx, Java...).`)
	var ps []backlog.Personality
	var asJSON, defaults bool
	f.personalityFlag(&ps, `a system, with parameters if it takes any (linux:somaxconn=128); "all" for every one; repeatable`, "all; with --defaults this host's", false)
	f.switchFlag(&defaults, "defaults", "what other software's default backlog becomes")
	f.switchFlag(&asJSON, "json", "print a JSON array, one object per system and backlog")
	return f, func(_ context.Context, e *env, args []string) error {
		switch {
		case defaults && len(args) > 0:
			return usagef("explain", "--defaults takes no BACKLOG; got %q", args[0])
		case !defaults && len(args) == 0:
			return usagef("explain", "give at least one BACKLOG: an integer, SOMAXCONN or SOMAXCONN_HINT(N); or --defaults")
		}
		if len(ps) == 0 {
			ps = backlog.All()
			if defaults {
				ps = []backlog.Personality{transport.Host()}
			}
		}
		return explain(e, ps, args, defaults, asJSON)
	}
}

func explain(e *env, ps []backlog.Personality, args []string, defaults, asJSON bool) error {
	type ask struct {
		who string
		r   request
	}
	var asks []ask
	if defaults {
		for _, d := range backlog.Defaults {
			// "The host's maximum" is what SOMAXCONN asks for.
			asks = append(asks, ask{d.Who, request{n: d.Backlog, somaxconn: d.Backlog == math.MaxInt32}})
		}
	}
	for _, a := range args {
		r, err := parseBacklog(a)
		if err != nil {
			return usagef("explain", "%q is not a backlog: %v", a, err)
		}
		asks = append(asks, ask{r: r})
	}
	var rows []explainJSON
	for _, a := range asks {
		for _, p := range ps {
			v := a.r.value(p)
			stored, capacity := p.Listen(v)
			rows = append(rows, explainJSON{
				Software: a.who, Personality: p.String(), Requested: v, Backlog: stored, Capacity: capacity,
				HalfOpenLimit: p.HalfOpenLimit(stored), OnFull: p.FullVerdict(),
				OnFinalACKFull: finalACKRule(p), Relisten: p.Relisten.String(),
			})
		}
	}
	if asJSON {
		return writeJSON(e, rows)
	}
	width := outputWidth(e.stdout)
	if defaults {
		t := &table{cols: []column{{name: "SOFTWARE", wrap: true, min: 10}, {name: "PERSONALITY", wrap: true, min: 10},
			{name: "REQUESTED", right: true}, {name: "BACKLOG", right: true}, {name: "CAN WAIT", right: true}, {name: "WHEN FULL"}}}
		for _, r := range rows {
			t.add(r.Software, r.Personality, strconv.Itoa(r.Requested), strconv.Itoa(r.Backlog), strconv.Itoa(r.Capacity), r.OnFull)
		}
		t.write(e.stdout, width)
		return nil
	}
	t := &table{cols: []column{{name: "PERSONALITY", wrap: true, min: 10}, {name: "REQUESTED", right: true}, {name: "BACKLOG", right: true},
		{name: "CAN WAIT", right: true}, {name: "WHEN FULL"}, {name: "LISTEN AGAIN", wrap: true, min: 8}}}
	for _, r := range rows {
		t.add(r.Personality, strconv.Itoa(r.Requested), strconv.Itoa(r.Backlog), strconv.Itoa(r.Capacity), r.OnFull, r.Relisten)
	}
	t.write(e.stdout, width)
	return nil
}
