package cli

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/backlog-dev/backlog/internal/lab"
)

func fillCommand() (*flags, runFunc) {
	fl := newFlags("fill", "[flags] ADDR", `
Opens many connections to ADDR (host:port) with this host's TCP, one after
another, keeps them open without sending anything, and reports what each
met: connected, reset afterwards, refused (the server answered with a
reset), timed out (no answer: the server dropped the SYNs), or failed (no
route, ...). Point it only at listeners of your own: on loopback or in a
network namespace you made. Interrupted (Ctrl-C), it says what had happened
by then and exits with status 130.`)
	var (
		clients                int
		arrival, timeout, hold time.Duration
		network                string
		asJSON                 bool
	)
	fl.intFlag(&clients, "clients", "N", "how many clients connect", 100, 1, maxClients, "a number of clients")
	fl.durationFlag(&arrival, "arrival", "time between clients' starts", time.Millisecond, 0, 10*time.Second)
	fl.durationFlag(&timeout, "timeout", "each client's connect timeout", 3*time.Second, time.Millisecond, 10*time.Minute)
	fl.durationFlag(&hold, "hold", "how long clients stay connected after the last connect ended, to see resets", 500*time.Millisecond, 0, 10*time.Minute)
	fl.choiceFlag(&network, "network", "N", "tcp, tcp4 or tcp6", "tcp", "tcp", "tcp4", "tcp6")
	fl.switchFlag(&asJSON, "json", "print the result as JSON: an object")
	return fl, func(ctx context.Context, e *env, args []string) error {
		if len(args) != 1 {
			return usagef("fill", "give one ADDR (host:port) to connect to")
		}
		if err := checkAddr(args[0], false); err != nil {
			return usagef("fill", "%q is not an address: %v, such as 127.0.0.1:8080", args[0], err)
		}
		addr, err := resolveTarget(ctx, network, args[0])
		if err != nil {
			if ctx.Err() != nil {
				return errInterrupted
			}
			return err
		}
		prog := newProgress(e, "TARGET", []string{args[0]})
		r := lab.Fill(ctx, lab.FillConfig{
			Network: network, Address: addr, Target: args[0], Clients: clients, Arrival: arrival, Timeout: timeout, Hold: hold,
			Progress: func(p lab.Progress) { prog.update(0, p) },
		})
		prog.finish()
		if asJSON {
			if err := writeJSON(e, r); err != nil {
				return err
			}
		} else {
			printFill(e, r, arrival, timeout, hold)
		}
		if r.Interrupted {
			return errInterrupted
		}
		return nil
	}
}

// lookupNetIP resolves names for fill; tests replace it.
var lookupNetIP = net.DefaultResolver.LookupNetIP

// resolveTarget turns host:port into an address of the network's family
// before any client starts, so that a name that does not resolve, or has
// no address of that family, fails the command (status 1) instead of
// being counted against every client.
func resolveTarget(ctx context.Context, network, target string) (string, error) {
	host, port, _ := net.SplitHostPort(target)
	family := map[string]string{"tcp": "ip", "tcp4": "ip4", "tcp6": "ip6"}[network]
	if a, err := netip.ParseAddr(host); err == nil {
		if (network == "tcp4" && !a.Unmap().Is4()) || (network == "tcp6" && a.Unmap().Is4()) {
			return "", fmt.Errorf("%s is not an address for --network %s", host, network)
		}
		return target, nil
	}
	addrs, err := lookupNetIP(ctx, family, host)
	if err != nil {
		return "", fmt.Errorf("cannot connect to %s: %w", target, err)
	}
	if len(addrs) == 0 {
		return "", fmt.Errorf("cannot connect to %s: %s has no address for --network %s", target, host, network)
	}
	return net.JoinHostPort(addrs[0].Unmap().String(), port), nil
}

func printFill(e *env, r lab.FillResult, arrival, timeout, hold time.Duration) {
	w, width := e.stdout, outputWidth(e.stdout)
	if r.Interrupted {
		para(w, width, "", fmt.Sprintf("Interrupted after %s: what follows is what had happened by then.", seconds1(r.DurationMS)))
		fmt.Fprintln(w)
	}
	target := r.Target
	if r.Address != r.Target {
		target += " (" + r.Address + ")"
	}
	para(w, width, "", fmt.Sprintf("%d clients to %s, %s apart, each given %s to connect", r.Clients, target, arrival, durationText(timeout)))
	fmt.Fprintln(w)
	rows := []outcomeRow{
		{"connected", r.Connected, ""},
		{"reset", r.Reset, "after connecting (watched until " + durationText(hold) + " after the last connect)"},
		{"refused", r.Refused, ""},
		{"timed out", r.TimedOut, timedOutNote(r.TimedOut, timeout, false)},
	}
	rows = append(rows, extraRows(lab.Counts{Failed: r.Failed, Unfinished: r.Unfinished}, r.Errors, r.Interrupted)...)
	printOutcomes(w, width, rows)
	fmt.Fprintln(w)
	printConnectTimes(w, r.ConnectMS)
}
