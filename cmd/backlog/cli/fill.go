package cli

import (
	"context"
	"flag"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/backlog-dev/backlog/internal/lab"
)

const fillUsage = `Usage: backlog fill [flags] ADDR

Opens many connections to ADDR (host:port) with this host's TCP, one after
another, keeps them open without sending anything, and reports what each
met: connected, reset afterwards, refused (the server answered with a
reset), or timed out (no answer: the server dropped the SYNs). Point it only
at listeners of your own: on loopback or in a network namespace you made.

  --clients N    how many clients connect (default 100, at most 20000)
  --arrival D    time between clients' starts (default 1ms)
  --timeout D    each client's connect timeout (default 3s)
  --hold D       how long clients stay connected after the last connect
                 ended, to see resets (default 500ms)
  --network N    tcp (default), tcp4 or tcp6
  --json         print the result as JSON
`

func runFill(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("fill", flag.ContinueOnError)
	clients := fs.Int("clients", 100, "")
	arrival := fs.Duration("arrival", time.Millisecond, "")
	timeout := fs.Duration("timeout", 3*time.Second, "")
	hold := fs.Duration("hold", 500*time.Millisecond, "")
	network := fs.String("network", "tcp", "")
	asJSON := fs.Bool("json", false, "")
	rest, err := parseFlags(e, fs, fillUsage, args)
	if err != nil {
		return helpIsNotAnError(err)
	}
	switch {
	case len(rest) != 1:
		return usagef("fill", "give one ADDR (host:port) to connect to")
	case *clients < 1 || *clients > maxClients:
		return usagef("fill", "--clients must be from 1 to %d", maxClients)
	case *timeout <= 0 || *timeout > 10*time.Minute:
		return usagef("fill", "--timeout must be more than 0 and at most 10m")
	case *arrival < 0 || *hold < 0 || *hold > 10*time.Minute:
		return usagef("fill", "--arrival and --hold must be from 0 to 10m")
	case *network != "tcp" && *network != "tcp4" && *network != "tcp6":
		return usagef("fill", "unknown network %q; valid: tcp, tcp4, tcp6", *network)
	}
	host, port, err := net.SplitHostPort(rest[0])
	if p, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
		return usagef("fill", "%q is not an address: give host:port, such as 127.0.0.1:8080", rest[0])
	}
	prog := newProgressView(e, 1)
	r := lab.Fill(ctx, lab.FillConfig{
		Network: *network, Address: rest[0], Clients: *clients, Arrival: *arrival, Timeout: *timeout, Hold: *hold,
		Progress: func(p lab.Progress) { prog.update(0, p) },
	})
	prog.finish()
	if *asJSON {
		return writeJSON(e, r)
	}
	fmt.Fprintf(e.stdout, "%d clients to %s, %s apart, each given %s to connect\n\n", r.Clients, r.Target, *arrival, *timeout)
	printOutcomes(e.stdout, []outcomeRow{
		{"connected", r.Connected, ""},
		{"reset", r.Reset, "after connecting, within " + hold.String()},
		{"refused", r.Refused, errorNote(r.Errors, "timeout")},
		{"timed out", r.TimedOut, timedOutNote(r.TimedOut, *timeout)},
	})
	printConnectTimes(e.stdout, r.ConnectMS)
	return nil
}
