package cli

import (
	"context"
	"errors"
	"flag"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// TestMisuse runs every misuse the command knows of, each issue 13 named
// among them, and checks that each exits with status 2, prints nothing on
// stdout and exactly this one line on stderr: the flag, what was given
// and what is accepted.
func TestMisuse(t *testing.T) {
	tooMany := []string{"probe"}
	for i := range maxProbeBacklogs + 1 {
		tooMany = append(tooMany, "--backlog", strconv.Itoa(i))
	}
	for _, tt := range []struct {
		args []string
		line string
	}{
		// The command itself.
		{nil, "backlog: no command given; commands: lab, probe, top, exporter, serve, shape, fill, explain, personalities (try backlog help)"},
		{[]string{"frobnicate"}, `backlog: unknown command "frobnicate"; commands: lab, probe, top, exporter, serve, shape, fill, explain, personalities`},
		{[]string{"help", "nope"}, `backlog help: unknown command "nope"`},
		{[]string{"lab", "--frob"}, "backlog lab: --frob: no such flag; lab takes --personality, --transport, --backlog, --clients, --arrival, --accept, --accept-after, --relisten, --timeout, --json, --timeline, --svg, --overload"},
		{[]string{"lab", "--timeout"}, "backlog lab: --timeout needs a value: --timeout D"},
		{[]string{"lab", "--json=maybe"}, `backlog lab: --json "maybe": give true or false, or the flag alone`},
		{[]string{"lab", "extra"}, `backlog lab: unexpected argument "extra"; lab takes only flags (backlog help lab)`},

		// The overload experiment: flags of its own, checked alike.
		{[]string{"lab", "--overload", "--rate", "fast"}, `backlog lab: --rate "fast": give multiples of the capacity such as 1.5x,3x, or rates such as 1200/s`},
		{[]string{"lab", "--overload", "--rate", "1000x"}, `backlog lab: --rate "1000x": 1000x is 400000 clients a second against a capacity of 400/s; give at most 20000/s and 200000 clients a run`},
		{[]string{"lab", "--overload", "--policies", "codel,fifo"}, `backlog lab: --policies "codel,fifo": unknown policy "fifo"; give a list of net.Listen, plain, small, large, codel, codel+lifo or codel+sized, or backlog=N`},
		{[]string{"lab", "--overload", "--transport", "netstack", "--policies", "net.Listen"}, `backlog lab: --policies "net.Listen": net.Listen runs on --transport kernel only`},
		{[]string{"lab", "--overload", "--transport", "pigeon"}, `backlog lab: --transport "pigeon": give kernel or netstack`},
		{[]string{"lab", "--overload", "--workers", "0"}, `backlog lab: --workers "0": give a number of workers from 1 to 1000`},
		{[]string{"lab", "--overload", "--target", "2s"}, `backlog lab: --target "2s": give a target no longer than --give-up (1s)`},
		{[]string{"lab", "--overload", "--give-up", "-1s"}, `backlog lab: --give-up "-1s": give a duration from 1ms to 1m`},
		{[]string{"lab", "--overload", "--rounds", "0"}, `backlog lab: --rounds "0": give a number of rounds from 1 to 100`},
		{[]string{"lab", "--overload", "--duration", "10m"}, `backlog lab: --duration "10m": give a duration from 100ms to 5m`},
		{[]string{"lab", "--overload", "--service", "nope"}, `backlog lab: --service "nope": give a duration such as 300ms, 5s or 1m (units: ns, us, ms, s, m, h)`},
		{[]string{"lab", "--overload", "--personality", "linux"}, "backlog lab: --personality: no such flag; lab takes --overload, --rate, --duration, --give-up, --service, --workers, --target, --interval, --policies, --rounds, --transport, --json, --timeline, --svg"},
		{[]string{"lab", "--overload", "extra"}, `backlog lab: unexpected argument "extra"; lab takes only flags (backlog help lab)`},
		{[]string{"lab", "--overload=1", "--rounds", "0"}, `backlog lab: --rounds "0": give a number of rounds from 1 to 100`},
		{[]string{"lab", "--overload=maybe"}, `backlog lab: --overload "maybe": give true or false, or the flag alone`},

		// Durations: a number without a unit, a word, out of range.
		{[]string{"lab", "--timeout", "5"}, `backlog lab: --timeout "5": a duration needs a unit, such as 5ms or 5s (units: ns, us, ms, s, m, h)`},
		{[]string{"lab", "--timeout", "soon"}, `backlog lab: --timeout "soon": give a duration such as 300ms, 5s or 1m (units: ns, us, ms, s, m, h)`},
		{[]string{"lab", "--timeout", "0s"}, `backlog lab: --timeout "0s": give a duration from 1ms to 10m`},
		{[]string{"lab", "--arrival", "-1ms"}, `backlog lab: --arrival "-1ms": give a duration from 0s to 10s`},
		{[]string{"fill", "--hold", "1h", "127.0.0.1:1"}, `backlog fill: --hold "1h": give a duration from 0s to 10m`},
		{[]string{"probe", "--watch", "1h"}, `backlog probe: --watch "1h": give a duration from 0s to 3m`},
		{[]string{"top", "--interval", "1ms"}, `backlog top: --interval "1ms": give a duration from 10ms to 1h`},
		{[]string{"serve", "--interval", "1ns"}, `backlog serve: --interval "1ns": give a duration from 10ms to 1h`},
		{[]string{"serve", "--idle-timeout", "0s"}, `backlog serve: --idle-timeout "0s": give a duration from 1ms to 24h`},

		// Backlogs: integers, SOMAXCONN and SOMAXCONN_HINT(N), as explain.
		{[]string{"lab", "--backlog", "abc"}, `backlog lab: --backlog "abc": give an integer from -2147483648 to 2147483647, SOMAXCONN or SOMAXCONN_HINT(N)`},
		{[]string{"serve", "--backlog", "1.5"}, `backlog serve: --backlog "1.5": give an integer from -2147483648 to 2147483647, SOMAXCONN or SOMAXCONN_HINT(N)`},
		{[]string{"probe", "--backlog", "99999999999"}, `backlog probe: --backlog "99999999999": give an integer from -2147483648 to 2147483647, SOMAXCONN or SOMAXCONN_HINT(N)`},
		{[]string{"explain", "abc"}, `backlog explain: "abc" is not a backlog: give an integer from -2147483648 to 2147483647, SOMAXCONN or SOMAXCONN_HINT(N)`},
		{tooMany, "backlog probe: --backlog: at most 16 values; 17 were given"},

		// Counts.
		{[]string{"lab", "--clients", "0"}, `backlog lab: --clients "0": give a number of clients from 1 to 20000`},
		{[]string{"lab", "--clients", "100000000"}, `backlog lab: --clients "100000000": give a number of clients from 1 to 20000`},
		{[]string{"fill", "--clients", "0", "127.0.0.1:1"}, `backlog fill: --clients "0": give a number of clients from 1 to 20000`},
		{[]string{"probe", "--max-clients", "0"}, `backlog probe: --max-clients "0": give a number of clients from 1 to 20000`},
		{[]string{"serve", "--reuseport", "0"}, `backlog serve: --reuseport "0": give a number of listeners from 1 to 64`},
		{[]string{"top", "--limit", "-1"}, `backlog top: --limit "-1": give a number of sockets from 0 to 1048576`},

		// Words.
		{[]string{"lab", "--transport", "carrier-pigeon"}, `backlog lab: --transport "carrier-pigeon": give netstack or kernel`},
		{[]string{"serve", "--handler", "gopher"}, `backlog serve: --handler "gopher": give http or echo`},
		{[]string{"fill", "--network", "udp", "127.0.0.1:1"}, `backlog fill: --network "udp": give tcp, tcp4 or tcp6`},
		{[]string{"lab", "--accept", "fast"}, `backlog lab: --accept "fast": give none, max, or a rate from 0 to 1000000 a second, such as 10/s`},
		{[]string{"serve", "--accept", "-3/s"}, `backlog serve: --accept "-3/s": give none, max, or a rate from 0 to 1000000 a second, such as 10/s`},
		{[]string{"lab", "--relisten", "2s"}, `backlog lab: --relisten "2s": give D:N, a time after the start (up to 1h) and a backlog, such as 2s:1`},

		// Systems: unknown names get the near ones, aliases included.
		{[]string{"lab", "--personality", "solaris"}, `backlog lab: --personality "solaris": no such system; give all or one of winsock1.1, winnt3.5, winnt4-workstation, winnt4-server, wince, irsock, win2000-sp1-wsd, wsp, windows, bsd4.3, freebsd, darwin, linux, gvisor, lwip`},
		{[]string{"lab", "--personality", "nt4"}, `backlog lab: --personality "nt4": no such system; did you mean winnt4-workstation (nt4-workstation) or winnt4-server (nt4-server)? (backlog personalities lists them all)`},
		{[]string{"explain", "--personality", "macosx", "5"}, `backlog explain: --personality "macosx": no such system; did you mean darwin (macos)? (backlog personalities lists them all)`},
		{[]string{"explain", "--personality", "linux:somaxconn=x", "5"}, `backlog explain: --personality "linux:somaxconn=x": personality linux: somaxconn must be an integer from 0 to 2147483647, not "x"`},
		{[]string{"personalities", "bsd"}, `backlog personalities: "bsd": no such system; did you mean win2000-sp1-wsd (wsd) or bsd4.3? (backlog personalities lists them all)`},
		{[]string{"personalities", "win2001"}, `backlog personalities: "win2001": no such system; did you mean windows (win2000)? (backlog personalities lists them all)`},
		{[]string{"serve", "--personality", "all"}, `backlog serve: --personality "all": give one system, not all`},
		{[]string{"probe", "--personality", "all"}, `backlog probe: --personality "all": give one system, not all`},

		// Addresses.
		{[]string{"serve", "--listen", "127.0.0.1:99999"}, `backlog serve: --listen "127.0.0.1:99999": the port must be 0-65535 (0: any free port), such as 127.0.0.1:8080`},
		{[]string{"serve", "--listen", "8080"}, `backlog serve: --listen "8080": give HOST:PORT or :PORT, such as 127.0.0.1:8080`},
		{[]string{"serve", "--metrics", "bogus"}, `backlog serve: --metrics "bogus": give HOST:PORT or :PORT, such as 127.0.0.1:9090`},
		{[]string{"serve", "--metrics", "127.0.0.1:http"}, `backlog serve: --metrics "127.0.0.1:http": the port must be 0-65535 (0: any free port), such as 127.0.0.1:9090`},
		{[]string{"exporter", "--listen", "9469"}, `backlog exporter: --listen "9469": give HOST:PORT or :PORT, such as :9469`},
		{[]string{"fill"}, "backlog fill: give one ADDR (host:port) to connect to"},
		{[]string{"fill", "localhost"}, `backlog fill: "localhost" is not an address: give HOST:PORT, such as 127.0.0.1:8080`},
		{[]string{"fill", ":80"}, `backlog fill: ":80" is not an address: give a host before the port, such as 127.0.0.1:8080`},
		{[]string{"fill", "127.0.0.1:99999"}, `backlog fill: "127.0.0.1:99999" is not an address: the port must be 1-65535, such as 127.0.0.1:8080`},
		{[]string{"top", "--port", "0"}, `backlog top: --port "0": give a port from 1 to 65535`},
		{[]string{"top", "--port", "http"}, `backlog top: --port "http": give a port from 1 to 65535`},

		// The TUN device and the user-space host's address.
		{[]string{"serve", "--transport", "netstack", "--tun", "a-very-long-tun-name-xyz", "--addr", "198.18.0.2/15"}, `backlog serve: --tun "a-very-long-tun-name-xyz": a device name has 1 to 15 characters (IFNAMSIZ is 16 with its NUL); this has 24`},
		{[]string{"serve", "--tun", "tun/0"}, `backlog serve: --tun "tun/0": a device name cannot be "." or "..", nor hold "/", ":" or spaces`},
		{[]string{"serve", "--addr", "198.18.0.2/0"}, `backlog serve: --addr "198.18.0.2/0": a /0 prefix takes in every address; give one such as /15 or /24`},
		{[]string{"serve", "--addr", "198.18.0.2/31"}, `backlog serve: --addr "198.18.0.2/31": a /31 prefix has no room for two hosts; give /30 or shorter`},
		{[]string{"serve", "--addr", "198.18.0.2/32"}, `backlog serve: --addr "198.18.0.2/32": a /32 prefix has no room for two hosts; give /30 or shorter`},
		{[]string{"serve", "--addr", "198.19.255.255/15"}, `backlog serve: --addr "198.19.255.255/15": 198.19.255.255 is the prefix's broadcast address; give a host address`},
		{[]string{"serve", "--addr", "198.18.0.0/15"}, `backlog serve: --addr "198.18.0.0/15": 198.18.0.0 is the network's own address; give a host address, such as 198.18.0.1/15`},
		{[]string{"serve", "--addr", "fd00::2/64"}, `backlog serve: --addr "fd00::2/64": give an IPv4 address with its prefix length, such as 198.18.0.2/15`},
		{[]string{"serve", "--addr", "127.0.0.2/8"}, `backlog serve: --addr "127.0.0.2/8": the address must be a unicast host address, such as 198.18.0.2/15`},
		{[]string{"serve", "--transport", "netstack"}, "backlog serve: --transport netstack needs --tun NAME and --addr CIDR (the user-space host's address)"},
		{[]string{"serve", "--tun", "tun0"}, "backlog serve: --tun and --addr go with --transport netstack"},
		{[]string{"serve", "--transport", "netstack", "--tun", "t0", "--addr", "198.18.0.2/15", "--listen", "127.0.0.1:80"}, `backlog serve: --listen "127.0.0.1:80": with --tun, HOST is the --addr address, 198.18.0.2 (or leave it out)`},
		{[]string{"serve", "--reuseport", "2", "--transport", "netstack", "--tun", "t", "--addr", "198.18.0.2/15"}, `backlog serve: --reuseport "2": needs --transport kernel: netstack has no SO_REUSEPORT`},

		// shape.
		{[]string{"shape", "--personality", "linux"}, "backlog shape: --port is required: the listening socket's port, 1 to 65535"},
		{[]string{"shape", "--port", "70000", "--personality", "linux"}, `backlog shape: --port "70000": give a port from 1 to 65535`},
		{[]string{"shape", "--port", "eighty"}, `backlog shape: --port "eighty": give a port from 1 to 65535`},
		{[]string{"shape", "--port", "8080"}, "backlog shape: --personality is required: one of winsock1.1, winnt3.5, winnt4-workstation, winnt4-server, wince, irsock, win2000-sp1-wsd, wsp, windows, bsd4.3, freebsd, darwin, linux, gvisor, lwip"},
		{[]string{"shape", "--port", "8080", "--personality", "all"}, `backlog shape: --personality "all": give one system, not all`},
		{[]string{"shape", "--port", "8080", "--personality", "linux", "--addr", "localhost"}, `backlog shape: --addr "localhost": give an IPv4 or IPv6 address, such as 127.0.0.1`},
		{[]string{"shape", "--port", "8080", "--personality", "linux", "--backlog", "-3"}, `backlog shape: --backlog "-3": give a backlog from 0 to 1073741824`},
		{[]string{"shape", "--port", "8080", "--personality", "linux", "--interval", "-1s"}, `backlog shape: --interval "-1s": give a duration from 0s to 1h`},
		{[]string{"shape", "--port", "8080", "--personality", "linux", "extra"}, `backlog shape: unexpected argument "extra"; shape takes only flags (backlog help shape)`},

		// What goes with what.
		{[]string{"top", "--json"}, `backlog top: --json "true": needs --once: it prints one snapshot`},
		{[]string{"top", "nginx"}, `backlog top: unexpected argument "nginx"; top takes only flags (backlog help top)`},
		{[]string{"probe", "5"}, `backlog probe: unexpected argument "5"; give backlogs with --backlog N`},
		{[]string{"explain"}, "backlog explain: give at least one BACKLOG: an integer, SOMAXCONN or SOMAXCONN_HINT(N); or --defaults"},
		{[]string{"explain", "--defaults", "5"}, `backlog explain: --defaults takes no BACKLOG; got "5"`},
		{[]string{"exporter", "now"}, `backlog exporter: unexpected argument "now"; exporter takes only flags (backlog help exporter)`},
	} {
		code, out, errOut := run(t, tt.args...)
		if code != 2 || errOut != tt.line+"\n" || out != "" {
			t.Errorf("backlog %q: exit %d, stdout %q, stderr:\n%s\nwant exit 2, no output and the line:\n%s", tt.args, code, out, errOut, tt.line)
		}
	}
}

// TestFailuresNameTheirCause checks failures that are not misuse: exit 1
// and one line saying which of the command's addresses failed and why.
func TestFailuresNameTheirCause(t *testing.T) {
	busy, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()

	lookupNetIP = func(_ context.Context, _, host string) ([]netip.Addr, error) {
		if host == "localhost" {
			return nil, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	defer func() { lookupNetIP = net.DefaultResolver.LookupNetIP }()

	for _, tt := range []struct {
		args []string
		line string
	}{
		{[]string{"serve", "--listen", "127.0.0.1:0", "--metrics", addr}, "backlog: --metrics " + addr + ": listen tcp " + addr + ": bind: address already in use"},
		{[]string{"serve", "--listen", addr}, "backlog: --listen " + addr + ": listen tcp " + addr + ": bind: address already in use"},
		{[]string{"exporter", "--listen", addr}, "backlog: --listen " + addr + ": listen tcp " + addr + ": bind: address already in use"},
		{[]string{"fill", "nosuch.test:80"}, "backlog: cannot connect to nosuch.test:80: lookup nosuch.test: no such host"},
		{[]string{"fill", "localhost:80"}, "backlog: cannot connect to localhost:80: localhost has no address for --network tcp"},
		{[]string{"fill", "--network", "tcp6", "127.0.0.1:80"}, "backlog: 127.0.0.1 is not an address for --network tcp6"},
	} {
		code, out, errOut := run(t, tt.args...)
		if code != 1 || errOut != tt.line+"\n" || out != "" {
			t.Errorf("backlog %q: exit %d, stdout %q, stderr:\n%s\nwant exit 1, no output and the line:\n%s", tt.args, code, out, errOut, tt.line)
		}
	}
}

// TestFlagValues checks values the flag layer takes, and what it makes of
// them.
func TestFlagValues(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int
	}{
		{"5", 5}, {"-1", -1}, {"0", 0}, {"SOMAXCONN_HINT(1000)", -1000}, {"somaxconn_hint(7)", -7},
	} {
		r, err := parseBacklog(tt.in)
		if err != nil || r.somaxconn || r.n != tt.want {
			t.Errorf("parseBacklog(%q) = %+v, %v; want %d", tt.in, r, err, tt.want)
		}
	}
	if r, err := parseBacklog("SOMAXCONN"); err != nil || !r.somaxconn {
		t.Errorf("parseBacklog(SOMAXCONN) = %+v, %v", r, err)
	}
	f := newFlags("x", "", "")
	var got []string
	f.add("name", "N", "", "", stringListValue{&got})
	rest, err := f.parse(&env{}, []string{"a", "--name", "one", "-5", "--name=two", "-name", "three", "--", "--name"})
	if err != nil || strings.Join(rest, " ") != "a -5 --name" || strings.Join(got, " ") != "one two three" {
		t.Errorf("parse: rest %q, values %q, %v", rest, got, err)
	}
	if !errors.Is(func() error { _, err := f.parse(&env{stdout: &strings.Builder{}}, []string{"-h"}); return err }(), flag.ErrHelp) {
		t.Error("-h is not ErrHelp")
	}
}
