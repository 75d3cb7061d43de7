package metrics

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backlog-dev/backlog/internal/netnstest"
	"github.com/backlog-dev/backlog/kernel"
)

// TestWriteTextIsCollect reads a namespace of the test's own, with a
// listener alone and an SO_REUSEPORT group of two, through Collect (and
// a registry) and through WriteText: the same families, help, types,
// series and values, and the text lints clean.
func TestWriteTextIsCollect(t *testing.T) {
	ns := netnstest.New(t)
	var err error
	netnstest.In(t, ns, func() {
		for _, c := range []struct {
			addr  string
			reuse bool
		}{{"127.0.0.1:80", false}, {"127.0.0.1:81", true}, {"127.0.0.1:81", true}} {
			var l *kernel.Listener
			if l, err = (&kernel.ListenConfig{Backlog: 9, ReusePort: c.reuse}).Listen(t.Context(), "tcp4", c.addr); err != nil {
				return
			}
			t.Cleanup(func() { l.Close() })
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	n, err := kernel.OpenNamespace(ns)
	if err != nil {
		t.Fatal(err)
	}
	c := NewHostCollector(HostConfig{Namespaces: []kernel.Namespace{n}})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	viaCollect, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := c.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	got, want := flatten(parseText(t, b.Bytes())), flatten(viaCollect)
	if !slices.Equal(got, want) {
		t.Errorf("WriteText:\n%s\nCollect:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !strings.Contains(b.String(), `backlog_address_sockets{address="127.0.0.1:81",netns="`+ns+`"} 2`) {
		t.Errorf("no group of two in:\n%s", b.String())
	}
	lintText(t, b.String())
}
