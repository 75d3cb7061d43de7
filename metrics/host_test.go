package metrics

import (
	"bytes"
	"net/netip"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

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
