package kernel_test

import (
	"log/slog"
	"reflect"
	"testing"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/netnstest"
	"github.com/backlog-dev/backlog/kernel"
)

// TestHostPersonality sets every sysctl HostPersonality reads to a
// non-default value in a namespace of the test's own, and checks that the
// personality built there is backlog.Linux of those values, that its name
// and parameters give it back through backlog.Lookup, and that a listener
// there is clamped to that somaxconn, with one warning that says so.
func TestHostPersonality(t *testing.T) {
	ns := netnstest.New(t)
	want := backlog.LinuxConfig{
		Somaxconn:         77,
		SynCookies:        0,
		AbortOnOverflow:   true,
		MaxSynBacklog:     300,
		SynRetries:        3,
		SynLinearTimeouts: 2,
		SynAckRetries:     2,
	}
	var (
		p, def    backlog.Personality
		err       error
		stored    int
		warnings  []map[string]string
		linearSet bool
	)
	netnstest.In(t, ns, func() {
		def, err = kernel.HostPersonality()
		if err != nil {
			return
		}
		for name, v := range map[string]int{
			"net/core/somaxconn":             want.Somaxconn,
			"net/ipv4/tcp_syncookies":        want.SynCookies,
			"net/ipv4/tcp_abort_on_overflow": 1,
			"net/ipv4/tcp_max_syn_backlog":   want.MaxSynBacklog,
			"net/ipv4/tcp_syn_retries":       want.SynRetries,
			"net/ipv4/tcp_synack_retries":    want.SynAckRetries,
		} {
			if err = writeSysctl(name, v); err != nil {
				return
			}
		}
		linearSet = writeSysctl("net/ipv4/tcp_syn_linear_timeouts", want.SynLinearTimeouts) == nil
		if p, err = kernel.HostPersonality(); err != nil {
			return
		}
		h := new(logRecords)
		lc := kernel.ListenConfig{Backlog: 1000, Logger: slog.New(h)}
		var ln *kernel.Listener
		if ln, err = lc.Listen(t.Context(), "tcp4", "127.0.0.1:0"); err != nil {
			return
		}
		stored = ln.Backlog()
		ln.Close()
		warnings = h.warnings()
	})
	if err != nil {
		t.Fatal(err)
	}
	if !linearSet {
		want.SynLinearTimeouts = 0 // a kernel before 6.5
	}
	if def.Params != "" {
		t.Errorf("a fresh namespace's personality has parameters %q; want the defaults", def.Params)
	}
	wantP := backlog.Linux(want)
	got := p
	got.Params = ""
	if !reflect.DeepEqual(got, wantP) {
		t.Errorf("HostPersonality:\n%+v\nwant backlog.Linux(%+v):\n%+v", got, want, wantP)
	}
	back, err := backlog.Lookup(p.String())
	if err != nil || !reflect.DeepEqual(back, p) {
		t.Errorf("Lookup(%q): %v, %+v; want the same personality", p.String(), err, back)
	}
	if stored != 77 {
		t.Errorf("listen(1000) with somaxconn 77 stored %d", stored)
	}
	if len(warnings) != 1 || warnings[0]["somaxconn"] != "77" || warnings[0]["stored"] != "77" || warnings[0]["requested"] != "1000" {
		t.Errorf("warnings %v; want one: requested=1000 stored=77 somaxconn=77", warnings)
	}
}
