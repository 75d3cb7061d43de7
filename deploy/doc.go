// Package deploy holds what it takes to run `backlog exporter` on a
// cluster, and the tests that check it against the exporter itself:
//
//	Dockerfile                   the command in a static image (built from the repository's root)
//	kubernetes/daemonset.yaml    the exporter on every node, with the least privilege that works
//	prometheus/alerts.yaml       alerting rules: a queue nearly full, drops rising, a lopsided reuseport group
//	grafana/backlog-dashboard.json   a dashboard of the same series
//
// The tests build the binary as the Dockerfile does and run it with the
// DaemonSet's arguments and capabilities; they parse the rules and the
// dashboard and check that every expression refers only to series, and
// labels, the exporter serves. There is no Go code here to import.
package deploy
