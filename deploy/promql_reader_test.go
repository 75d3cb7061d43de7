package deploy

import (
	"slices"
	"testing"
)

// TestReadPromQL: the reader finds the series and the labels, and refuses
// what would make a rule check meaningless.
func TestReadPromQL(t *testing.T) {
	refs, err := readPromQL(`topk(10, rate(backlog_socket_dropped_total{netns=~"$netns", address!="a}b"}[$__rate_interval])) / on (netns, inode) group_left(process) backlog_socket_info > 0.5 offset 5m`)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(refs.Metrics, []string{"backlog_socket_dropped_total", "backlog_socket_info"}) {
		t.Errorf("metrics %v", refs.Metrics)
	}
	if !slices.Equal(refs.Labels, []string{"netns", "address", "netns", "inode", "process"}) {
		t.Errorf("labels %v", refs.Labels)
	}
	if refs, err := readPromQL(`count by (netns) (backlog_socket_backlog)`); err != nil || !slices.Equal(refs.Metrics, []string{"backlog_socket_backlog"}) {
		t.Errorf("aggregation with its grouping first: %v %v", refs, err)
	}
	for _, bad := range []string{
		`rate(backlog_socket_dropped_total[5m]`,
		`rat(backlog_socket_dropped_total[5m])`,
		`backlog_socket_backlog{netns=~"x}`,
		`sum by (netns (x)`,
		`1 > 0`,
	} {
		if _, err := readPromQL(bad); err == nil {
			t.Errorf("readPromQL(%q) accepted", bad)
		}
	}
}
