#!/usr/bin/env bash
# bench.sh runs the benchmarks of issue 7 and prints one markdown table of
# every figure, with the ratios against each baseline.
#
# Usage: scripts/bench.sh            (from anywhere in the repository)
#
# Environment:
#   ROUNDS=6         how many times every benchmark runs. The benchmarks are
#                    run round by round (kernel, netstack, queue, memory,
#                    lab, then again), so a candidate and its baseline always
#                    run side by side, seconds apart; each ratio is the
#                    median of the per-round ratios.
#   BENCHTIME=1s     -benchtime of the throughput benchmarks
#   QUEUETIME=0.2s   -benchtime of the queue benchmarks
#   OUT=dir          where the raw results go (default: a new temporary
#                    directory); benchstat reads them
#   BENCHSTAT=1      0 skips the benchstat comparisons (which need
#                    golang.org/x/perf from the module proxy the first time)
#
# It needs only Go: benchstat runs through `go run`, and the medians and
# ratios are computed here.
set -euo pipefail

ROUNDS=${ROUNDS:-6}
BENCHTIME=${BENCHTIME:-1s}
QUEUETIME=${QUEUETIME:-0.2s}
BENCHSTAT=${BENCHSTAT:-1}
BENCHSTAT_PKG=golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da

root=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/backlog-bench.XXXXXX")}
mkdir -p "$OUT"
cd "$root"

echo "building test binaries in $OUT ..." >&2
go test -c -o "$OUT/queue.test" .
go test -c -o "$OUT/kernel.test" ./kernel
go test -c -o "$OUT/netstack.test" ./netstack
go test -c -o "$OUT/lab.test" ./internal/lab
go build -o "$OUT/backlog" ./cmd/backlog
rm -f "$OUT"/{kernel,netstack,queue,memory,lab}.txt

# bench runs one test binary from its package directory and appends its
# output to a results file.
bench() {
	local dir=$1 bin=$2 out=$3
	shift 3
	(cd "$dir" && "$OUT/$bin" -test.run '^$' "$@") >>"$OUT/$out"
}

for r in $(seq "$ROUNDS"); do
	echo "round $r of $ROUNDS ..." >&2
	bench kernel kernel.test kernel.txt -test.bench '^BenchmarkAccept$' -test.benchtime "$BENCHTIME"
	bench netstack netstack.test netstack.txt -test.bench '^BenchmarkSetup$' -test.benchtime "$BENCHTIME"
	bench netstack netstack.test netstack.txt -test.bench '^BenchmarkEcho$' -test.benchtime 20000x
	bench . queue.test queue.txt -test.bench '^BenchmarkQueue' -test.benchtime "$QUEUETIME"
	bench netstack netstack.test memory.txt -test.bench '^Benchmark(Memory|Flood)$' -test.benchtime 1x
	bench internal/lab lab.test lab.txt -test.bench '^BenchmarkLabAll$' -test.benchtime 1x
	# The command itself, timed from outside, as a benchmark line.
	start=$(date +%s%N)
	"$OUT/backlog" lab --personality all >/dev/null 2>&1
	ns=$(($(date +%s%N) - start))
	awk -v ns="$ns" 'BEGIN { printf "BenchmarkCommandLabAll 1 %d ns/op %.3f s/lab\n", ns, ns / 1e9 }' >>"$OUT/lab.txt"
done

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
cat <<EOF
## Benchmarks

- machine: ${cpu:-unknown CPU}, $(nproc 2>/dev/null || echo '?') CPUs, $(uname -sr), $(go version | cut -d' ' -f3-)
- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (with uncommitted changes)')
- command: ROUNDS=$ROUNDS BENCHTIME=$BENCHTIME QUEUETIME=$QUEUETIME scripts/bench.sh
- each figure is the median of $ROUNDS rounds. A ratio marked *paired* is measured inside one benchmark run, the
  candidate and its baseline taking turns 128 connections at a time (median and range over the rounds); *of medians*
  divides the medians of two separate figures; the others are per-round ratios of sub-benchmarks run back to back.

EOF

awk '
# Benchmark lines: name, iterations, then value-unit pairs. The k-th line
# of a name is its k-th round.
/^Benchmark/ {
	name = $1
	sub(/-[0-9]+$/, "", name)
	k = ++rounds[name]
	for (i = 3; i + 1 <= NF; i += 2) {
		v[name, $(i + 1), k] = $i
		seen[name, $(i + 1)] = 1
	}
}

function sort(a, n,    i, j, t) {
	for (i = 2; i <= n; i++) {
		t = a[i]
		for (j = i - 1; j >= 1 && a[j] > t; j--)
			a[j + 1] = a[j]
		a[j + 1] = t
	}
}

function median(a, n) {
	sort(a, n)
	if (n % 2)
		return a[(n + 1) / 2]
	return (a[n / 2] + a[n / 2 + 1]) / 2
}

# med returns the median of a figure over the rounds, or "" when missing.
function med(name, unit,    a, n, k) {
	if (!((name, unit) in seen))
		return ""
	n = 0
	for (k = 1; k <= rounds[name]; k++)
		if ((name, unit, k) in v)
			a[++n] = v[name, unit, k] + 0
	return median(a, n)
}

# spread sets rmed, rmin and rmax to the median and range of a[1..n]; it
# returns 0 when n is 0.
function spread(a, n) {
	if (n == 0)
		return 0
	rmed = median(a, n)
	rmin = a[1]
	rmax = a[n]
	return 1
}

# ratio sets rmed, rmin and rmax from the per-round ratios cand/base of a
# figure; it returns 0 when either is missing.
function ratio(cand, base, unit,    a, n, k) {
	n = 0
	for (k = 1; k <= rounds[cand] && k <= rounds[base]; k++)
		if ((cand, unit, k) in v && (base, unit, k) in v && v[base, unit, k] + 0 != 0)
			a[++n] = v[cand, unit, k] / v[base, unit, k]
	return spread(a, n)
}

function ratiocell(cand, base, unit) {
	if (!ratio(cand, base, unit))
		return "—"
	return sprintf("**%.3f** (%.3f–%.3f)", rmed, rmin, rmax)
}

# paired sets rmed, rmin and rmax from the ratio a paired benchmark reports
# itself (the baseline took turns with the candidate in the same run).
function paired(name, unit,    a, n, k) {
	if (unit == "")
		unit = "ratio"
	n = 0
	for (k = 1; k <= rounds[name]; k++)
		if ((name, unit, k) in v)
			a[++n] = v[name, unit, k] + 0
	return spread(a, n)
}

function pairedcell(name, unit) {
	if (!paired(name, unit))
		return "—"
	return sprintf("**%.3f** (%.3f–%.3f) paired", rmed, rmin, rmax)
}

# mratio returns the ratio of the medians of a figure, or "" when missing.
function mratio(cand, base, unit,    c, b) {
	c = med(cand, unit)
	b = med(base, unit)
	if (c == "" || b == "" || b == 0)
		return ""
	return c / b
}

function mratiocell(cand, base, unit,    r) {
	r = mratio(cand, base, unit)
	if (r == "")
		return "—"
	return sprintf("%.3f of medians", r)
}

# num formats a number with thousands separators, or "—".
function num(x, prec,    s, ip, frac, out) {
	if (x == "")
		return "—"
	s = sprintf("%." prec "f", x)
	ip = s
	frac = ""
	if (index(s, ".")) {
		ip = substr(s, 1, index(s, ".") - 1)
		frac = substr(s, index(s, "."))
	}
	out = ""
	while (length(ip) > 3) {
		out = "," substr(ip, length(ip) - 2) out
		ip = substr(ip, 1, length(ip) - 3)
	}
	return ip out frac
}

function met(ok) { return ok ? "yes" : "**no**" }

function row(item, what, base, cand, r, goal, ok) {
	printf "| %s | %s | %s | %s | %s | %s | %s |\n", item, what, base, cand, r, goal, ok
}

# accept describes one kernel accept case: conn/s and CPU per connection.
function accept(n) {
	return sprintf("%s conn/s, %s µs CPU", num(med(n, "conn/s"), 0), num(med(n, "cpu-us/conn"), 1))
}

function setup(n) {
	return sprintf("%s conn/s; p50 %s µs, p99 %s µs; %s µs CPU", num(med(n, "conn/s"), 0),
		num(med(n, "p50-us"), 0), num(med(n, "p99-us"), 0), num(med(n, "cpu-us/conn"), 1))
}

function qcell(n) {
	if (med(n, "ns/op") == "")
		return "—"
	return sprintf("%s ns, %s allocs", num(med(n, "ns/op"), 1), num(med(n, "allocs/op"), 0))
}

# echocell is the cell of BenchmarkEcho: allocations and time per echoed byte, or a
# dash where the benchmark did not run.
function echocell(n) {
	if (med(n, "ns/op") == "")
		return "—"
	return sprintf("%s allocs, %s µs", num(med(n, "allocs/op"), 0), num(med(n, "ns/op") / 1000, 1))
}

function flood(n,    s) {
	s = sprintf("%s KiB, %s SYN/s, +%s goroutines", num(med(n, "heap-KiB"), 0), num(med(n, "SYN/s"), 0), num(med(n, "goroutines"), 0))
	if (med(n, "half-open") != "")
		s = s ", " num(med(n, "half-open"), 0) " half-open"
	return s
}

END {
	row("Item", "What", "Baseline", "backlog", "Ratio backlog ÷ baseline: median (range)", "Goal", "Met")
	print "|---|---|---|---|---|---|---|"

	A = "BenchmarkAccept/impl="
	base = A "net.Listen"
	n = split("kernel kernel+stats kernel+metrics kernel+personality", cases, " ")
	label["kernel"] = "plain"
	label["kernel+stats"] = "Stats polled every 10 ms"
	label["kernel+metrics"] = "Prometheus scrape every 10 ms"
	label["kernel+personality"] = "linux personality emulated"
	for (i = 1; i <= n; i++) {
		c = A cases[i]
		ok = paired(c) && rmed >= 0.98
		row("1. kernel accept", "conn/s vs net.Listen, loopback: " label[cases[i]], accept(base), accept(c), pairedcell(c), "≥ 0.98", met(ok))
	}
	row("1. kernel accept", "noise of the method: net.Listen vs net.Listen", "", "", pairedcell(base), "—", "—")

	# The baseline is the gVisor listener of a host without a gate (issue
	# 15): the ratios below are against it, with the goals of that issue.
	S = "BenchmarkSetup/impl="
	G = S "gvisor-ungated"
	ok = paired(S "backlog") && rmed >= 0.98
	row("2. netstack setup", "conn/s vs gVisor listener on an ungated host, taking turns", setup(G), setup(S "backlog"), pairedcell(S "backlog"), "≥ 0.98", met(ok))
	r = mratio(S "backlog", G, "conn/s")
	row("2. netstack setup", "conn/s, each measured in its own turns", "", "", mratiocell(S "backlog", G, "conn/s"), "≥ 0.98", met(r != "" && r >= 0.98))
	ok = paired(S "backlog", "cpu-ratio") && rmed <= 1.02
	row("2. netstack setup", "CPU per connection (whole process)", num(med(G, "cpu-us/conn"), 1) " µs", num(med(S "backlog", "cpu-us/conn"), 1) " µs", pairedcell(S "backlog", "cpu-ratio"), "≤ 1.02", met(ok))
	ok = paired(S "backlog", "p99-ratio") && rmed <= 1.05
	row("2. netstack setup", "connect() p99", num(med(G, "p99-us"), 0) " µs", num(med(S "backlog", "p99-us"), 0) " µs", pairedcell(S "backlog", "p99-ratio"), "≤ 1.05", met(ok))
	row("2. netstack setup", "reference: gVisor listener on the gated host", setup(G), setup(S "gvisor-gated"), pairedcell(S "gvisor-gated"), "—", "—")
	row("2. netstack setup", "reference: gVisor listener keeping no handshake (always cookies)", setup(G), setup(S "gvisor-stateless"), pairedcell(S "gvisor-stateless"), "—", "—")
	row("2. netstack setup", "reference: host kernel, loopback", setup(G), setup(S "kernel"), pairedcell(S "kernel"), "—", "—")
	row("2. netstack setup", "noise of the method: gVisor listener vs another", "", "", pairedcell(G), "—", "—")
	E = "BenchmarkEcho/impl="
	ok = med(E "backlog", "allocs/op") != "" && med(E "gvisor", "allocs/op") != "" && med(E "backlog", "allocs/op") <= med(E "gvisor", "allocs/op")
	row("2. netstack data path", "one byte echoed, allocations (whole process) vs gVisor listener on an ungated host", echocell(E "gvisor"), echocell(E "backlog"), ratiocell(E "backlog", E "gvisor", "ns/op"), "adds 0 allocs", met(ok))

	Q = "BenchmarkQueue/op="
	P = "BenchmarkQueueParallel/op="
	n = split("offer accept offer+accept syn+established+accept stats", ops, " ")
	for (i = 1; i <= n; i++) {
		c = Q ops[i] "/impl=queue"
		b = Q ops[i] "/impl=chan"
		ok = med(c, "ns/op") < 100 && med(c, "allocs/op") == 0
		row("3. queue", ops[i] ", one goroutine (baseline: channel)", qcell(b), qcell(c), ratiocell(c, b, "ns/op"), "tens of ns, 0 allocs", met(ok))
	}
	n = split("1 8", par, " ")
	m = split("offer+accept syn+established+accept", pops, " ")
	for (i = 1; i <= n; i++) {
		for (j = 1; j <= m; j++) {
			c = P pops[j] "/goroutines=" par[i] "xGOMAXPROCS/impl=queue"
			b = P pops[j] "/goroutines=" par[i] "xGOMAXPROCS/impl=chan"
			ok = med(c, "ns/op") < 100 && med(c, "allocs/op") == 0
			row("3. queue", pops[j] ", " par[i] "×GOMAXPROCS goroutines", qcell(b), qcell(c), ratiocell(c, b, "ns/op"), "tens of ns, 0 allocs", met(ok))
		}
	}

	M = "BenchmarkMemory/state="
	n = split("waiting half-open", st, " ")
	for (i = 1; i <= n; i++) {
		c = M st[i] "/impl=backlog"
		b = M st[i] "/impl=gvisor"
		ok = med(c, "B/conn") != "" && med(b, "B/conn") != "" && med(c, "B/conn") <= med(b, "B/conn")
		row("4. memory", "bytes per " (st[i] == "waiting" ? "waiting connection" : "half-open handshake") " (baseline: gVisor listener)", num(med(b, "B/conn"), 0) " B", num(med(c, "B/conn"), 0) " B", mratiocell(c, b, "B/conn"), "≤ 1.0", met(ok))
	}
	F = "BenchmarkFlood/"
	row("4. memory", "SYN flood, cookies (linux, listen max)", flood(F "impl=gvisor"), flood(F "personality=linux/impl=backlog"), mratiocell(F "personality=linux/impl=backlog", F "impl=gvisor", "heap-KiB"), "bounded by the backlog", met(med(F "personality=linux/impl=backlog", "half-open") != "" && med(F "personality=linux/impl=backlog", "half-open") <= 4097))
	row("4. memory", "SYN flood, no cookies (windows, listen max)", flood(F "impl=gvisor"), flood(F "personality=windows/impl=backlog"), mratiocell(F "personality=windows/impl=backlog", F "impl=gvisor", "heap-KiB"), "bounded by the backlog", met(med(F "personality=windows/impl=backlog", "half-open") != "" && med(F "personality=windows/impl=backlog", "half-open") <= 200))

	L = "BenchmarkLabAll"
	row("5. lab", "`backlog lab --personality all`, wall time", "", num(med("BenchmarkCommandLabAll", "s/lab"), 2) " s (command)", "—", "—", "—")
	row("5. lab", "the same in process (BenchmarkLabAll)", "", sprintf("%s s wall, longest run %s s, %s s CPU", num(med(L, "s/lab"), 2), num(med(L, "max-run-s"), 2), num(med(L, "cpu-s/lab"), 2)), "—", "—", "—")
}
' "$OUT"/kernel.txt "$OUT"/netstack.txt "$OUT"/queue.txt "$OUT"/memory.txt "$OUT"/lab.txt

if [ "$BENCHSTAT" = 1 ]; then
	echo
	echo "### benchstat, columns by implementation"
	for f in kernel netstack queue memory; do
		echo
		echo '```'
		go run "$BENCHSTAT_PKG" -col /impl "$OUT/$f.txt" || echo "(benchstat failed; raw results in $OUT/$f.txt)"
		echo '```'
	done
fi
echo
echo "raw results: $OUT" >&2
