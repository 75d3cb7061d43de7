package cli

import (
	"context"
	"flag"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/transport"
)

const explainUsage = `Usage: backlog explain [--personality NAME|all]... [--json] BACKLOG...
       backlog explain --defaults [--personality NAME|all]... [--json]

Shows what listen(BACKLOG) becomes: the backlog each system stores, how many
completed connections can then wait, what a connection meets when the queue
is full, and what listen() again does. BACKLOG is an integer (negative ones
too), SOMAXCONN (each system's own value), or SOMAXCONN_HINT(N) (Windows).

  --personality NAME   a system (repeatable; "all" is the default); NAME may
                       carry parameters: linux:somaxconn=128,syncookies=0
  --defaults           instead of BACKLOG: the backlog other software passes
                       when its user chooses none (Go, Python, nginx, Java…),
                       under this host's rules unless --personality says
  --json               print a JSON array, one object per system and backlog
`

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

var hintArg = regexp.MustCompile(`^(?i)SOMAXCONN_HINT\(([0-9]+)\)$`)

func parseRequest(s string) (request, error) {
	if strings.EqualFold(s, "SOMAXCONN") {
		return request{somaxconn: true}, nil
	}
	if m := hintArg.FindStringSubmatch(s); m != nil {
		n, err := strconv.Atoi(m[1])
		if err == nil {
			return request{n: backlog.SomaxconnHint(n)}, nil
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return request{}, usagef("explain", "%q is not a backlog; give an integer, SOMAXCONN or SOMAXCONN_HINT(N)", s)
	}
	if n > math.MaxInt || n < math.MinInt {
		return request{}, usagef("explain", "%q is out of range", s)
	}
	return request{n: int(n)}, nil
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

func runExplain(_ context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	var names listFlag
	fs.Var(&names, "personality", "a system, or all")
	asJSON := fs.Bool("json", false, "print JSON")
	defaults := fs.Bool("defaults", false, "other software's defaults")
	args, err := parseFlags(e, fs, explainUsage, args)
	if err != nil {
		return helpIsNotAnError(err)
	}
	switch {
	case *defaults && len(args) > 0:
		return usagef("explain", "--defaults takes no BACKLOG; got %q", args[0])
	case !*defaults && len(args) == 0:
		return usagef("explain", "give at least one BACKLOG: an integer, SOMAXCONN or SOMAXCONN_HINT(N); or --defaults")
	}
	if *defaults && len(names) == 0 {
		names = listFlag{transport.Host().String()}
	}
	ps, err := resolve("explain", names)
	if err != nil {
		return err
	}
	type ask struct {
		who string
		r   request
	}
	var asks []ask
	if *defaults {
		for _, d := range backlog.Defaults {
			// "The host's maximum" is what SOMAXCONN asks for.
			asks = append(asks, ask{d.Who, request{n: d.Backlog, somaxconn: d.Backlog == math.MaxInt32}})
		}
	}
	for _, a := range args {
		r, err := parseRequest(a)
		if err != nil {
			return err
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
	if *asJSON {
		return writeJSON(e, rows)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	if *defaults {
		fmt.Fprintln(tw, "SOFTWARE\tPERSONALITY\tREQUESTED\tBACKLOG\tCAN WAIT\tWHEN FULL")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", r.Software, r.Personality, r.Requested, r.Backlog, r.Capacity, r.OnFull)
		}
		return tw.Flush()
	}
	fmt.Fprintln(tw, "PERSONALITY\tREQUESTED\tBACKLOG\tCAN WAIT\tWHEN FULL\tLISTEN AGAIN")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\n", r.Personality, r.Requested, r.Backlog, r.Capacity, r.OnFull, r.Relisten)
	}
	return tw.Flush()
}
