package kernel

import (
	"os"
	"strings"
	"testing"
)

// TestParseNetstat reads a /proc/net/netstat whose TcpExt fields come in
// another order than usual, with an MPTcpExt block after it whose names
// overlap, and with one of the counters missing (older kernels).
func TestParseNetstat(t *testing.T) {
	in := "TcpExt: SyncookiesSent ListenDrops Foo ListenOverflows SyncookiesRecv SyncookiesFailed TCPReqQFullDoCookies\n" +
		"TcpExt: 5 17 99 16 4 3 2\n" +
		"IpExt: InNoRoutes ListenDrops\n" +
		"IpExt: 1 1000\n" +
		"MPTcpExt: ListenOverflows\n" +
		"MPTcpExt: 777\n"
	got, err := parseNetstat([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := Counters{ListenOverflows: 16, ListenDrops: 17, TCPReqQFullDoCookies: 2, SyncookiesSent: 5, SyncookiesRecv: 4, SyncookiesFailed: 3}
	if got != want {
		t.Errorf("parseNetstat: %+v; want %+v", got, want)
	}
	for _, bad := range []string{
		"",
		"TcpExt: ListenDrops\n",
		"TcpExt: ListenDrops ListenOverflows\nTcpExt: 1\n",
		"TcpExt: ListenDrops\nTcpExt: x\n",
	} {
		if _, err := parseNetstat([]byte(bad)); err == nil {
			t.Errorf("parseNetstat(%q) succeeded", bad)
		}
	}
}

// TestParseNetstatHost parses this host's own file and checks that the
// counters every kernel since 2.6 has are there.
func TestParseNetstatHost(t *testing.T) {
	b, err := os.ReadFile(netstatPath())
	if err != nil {
		t.Skip(err)
	}
	if !strings.Contains(string(b), " ListenOverflows ") {
		t.Fatal("no ListenOverflows in", netstatPath())
	}
	if _, err := parseNetstat(b); err != nil {
		t.Fatal(err)
	}
}

// FuzzParseNetstat checks that no input makes the parser panic, and that
// what it accepts has the TcpExt header it needs.
func FuzzParseNetstat(f *testing.F) {
	f.Add([]byte("TcpExt: ListenOverflows ListenDrops\nTcpExt: 1 2\n"))
	f.Add([]byte("TcpExt: ListenOverflows\nTcpExt: 18446744073709551615\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := parseNetstat(b); err == nil && !strings.Contains(string(b), "TcpExt:") {
			t.Errorf("accepted input without TcpExt: %q", b)
		}
	})
}
