package metrics

import (
	"bytes"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/backlog-dev/backlog/internal/netnstest"
	"github.com/backlog-dev/backlog/kernel"
)

// flatten turns metric families into "name{sorted labels} value" lines,
// leaving out the scrape's own duration.
func flatten(mfs []*dto.MetricFamily) []string {
	var out []string
	for _, mf := range mfs {
		if mf.GetName() == "backlog_exporter_scrape_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(ls)
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			out = append(out, mf.GetName()+"/"+mf.GetType().String()+"/"+mf.GetHelp()+"{"+strings.Join(ls, ",")+"} "+model.SampleValue(v).String())
		}
	}
	sort.Strings(out)
	return out
}

func parseText(t *testing.T, b []byte) []*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	m, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("the text does not parse: %v\n%s", err, b)
	}
	var out []*dto.MetricFamily
	for _, mf := range m {
		out = append(out, mf)
	}
	return out
}

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

// TestWriteTextEscapes: a process name with a quote, a backslash and a
// newline (any user can name a process so) comes back whole from the
// text.
func TestWriteTextEscapes(t *testing.T) {
	name := "a\"b\\c\nd"
	r := []NamespaceReading{{
		Namespace: kernel.Namespace{Inode: 1},
		Sockets:   []kernel.Socket{{Addr: netip.MustParseAddrPort("127.0.0.1:80"), Inode: 7, Backlog: 5, Group: 1, PID: 3, Process: name}},
	}}
	var b bytes.Buffer
	if err := writeText(&b, r, 0); err != nil {
		t.Fatal(err)
	}
	for _, mf := range parseText(t, b.Bytes()) {
		if mf.GetName() != "backlog_socket_backlog" {
			continue
		}
		for _, l := range mf.GetMetric()[0].GetLabel() {
			if l.GetName() == "process" && l.GetValue() != name {
				t.Errorf("process %q; want %q", l.GetValue(), name)
			}
		}
		return
	}
	t.Errorf("no backlog_socket_backlog in:\n%s", b.String())
}

// lintText fails the test for every problem promlint finds in a text
// exposition.
func lintText(t *testing.T, text string) {
	t.Helper()
	problems, err := promlint.New(strings.NewReader(text)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
