package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The shaper's netfilter rules, installed with iptables and ip6tables (the
// xt NFQUEUE target: nftables' own queue expression is not in every kernel)
// in the network namespace of the listener. Per shaped port and family:
//
//	mangle INPUT (appended):  -p tcp --syn --dport P [-d A] -m mark --mark 0/R -j NFQUEUE --queue-num Q --queue-bypass
//	filter INPUT (first):     -p tcp --syn --dport P [-d A] -m mark --mark R/R -j REJECT --reject-with tcp-reset
//
// A SYN goes to the queue; the shaper's verdict drops it (ignore), accepts
// it (pass), or accepts it with the refuse bit R in its mark, which the
// filter rule answers with a reset from the kernel itself
// (net/ipv4/netfilter/nf_reject_ipv4.c nf_send_reset), so that the client's
// connect fails with ECONNREFUSED. The queue sits in mangle, whose
// accepted packets go on to the filter table: the host's own firewall
// rules still see every SYN the shaper passes.
//
// --queue-bypass makes a queue with no program bound to it pass its
// packets on (net/netfilter/nf_queue.c, NF_VERDICT_FLAG_QUEUE_BYPASS), and
// the kernel unbinds a queue when its socket closes
// (net/netfilter/nfnetlink_queue.c nfqnl_rcv_nl_event), so rules left by a
// shaper that was killed let SYNs through, untouched. Every rule carries a
// comment naming its owner's process ID and start time; a shaper starting
// removes the rules of owners that are gone.

// refuseMark is the packet-mark bit that asks the filter rule for a reset.
// It is one bit, so marks other software sets pass through unchanged.
const refuseMark = 0x00800000

// ownerPrefix starts the comment of every rule a shaper installs.
const ownerPrefix = "backlog-shape"

// ruleSet is the rules of one shaper.
type ruleSet struct {
	ns    *netns
	owner string
	// installed lists the rules added, as iptables arguments after the
	// table and the -A or -I: removed in reverse order.
	installed []installedRule
}

type installedRule struct {
	cmd, table string
	spec       []string
}

// iptablesFor returns the command for an address family.
func iptablesFor(a netip.Addr) string {
	if a.Is4() {
		return "iptables"
	}
	return "ip6tables"
}

// errNoIptables says that the rules cannot be installed here.
var errNoIptables = errors.New("iptables is not installed")

// installRules adds the rules for port on addr (any address when addr is
// unspecified; both families for a dual-stack wildcard) sending SYNs to
// queue num.
func installRules(ns *netns, families []netip.Addr, port uint16, num uint16) (*ruleSet, error) {
	r := &ruleSet{ns: ns, owner: ownerTag(os.Getpid())}
	for _, a := range families {
		cmd := iptablesFor(a)
		if _, err := exec.LookPath(cmd); err != nil {
			r.remove()
			return nil, fmt.Errorf("%w (%s)", errNoIptables, cmd)
		}
		match := []string{"-p", "tcp", "--syn", "--dport", strconv.Itoa(int(port))}
		if !a.IsUnspecified() {
			match = append(match, "-d", a.String())
		}
		comment := []string{"-m", "comment", "--comment", r.owner + " q=" + strconv.Itoa(int(num))}
		queue := append(append(append([]string{}, match...), "-m", "mark", "--mark", "0/"+hexMark(refuseMark)), comment...)
		queue = append(queue, "-j", "NFQUEUE", "--queue-num", strconv.Itoa(int(num)), "--queue-bypass")
		reject := append(append(append([]string{}, match...), "-m", "mark", "--mark", hexMark(refuseMark)+"/"+hexMark(refuseMark)), comment...)
		reject = append(reject, "-j", "REJECT", "--reject-with", "tcp-reset")
		// The reject rule first: a SYN is never queued before what
		// answers the refused ones is in place.
		if err := r.add(cmd, "filter", "-I", reject); err != nil {
			r.remove()
			return nil, err
		}
		if err := r.add(cmd, "mangle", "-A", queue); err != nil {
			r.remove()
			return nil, err
		}
	}
	return r, nil
}

func hexMark(m uint32) string { return "0x" + strconv.FormatUint(uint64(m), 16) }

func (r *ruleSet) add(cmd, table, op string, spec []string) error {
	args := append([]string{"-w", "-t", table, op, "INPUT"}, spec...)
	if op == "-I" {
		args = append([]string{"-w", "-t", table, "-I", "INPUT", "1"}, spec...)
	}
	if err := r.ns.run(cmd, args...); err != nil {
		return err
	}
	r.installed = append(r.installed, installedRule{cmd, table, spec})
	return nil
}

// remove deletes the rules, newest first, and returns the first failure.
func (r *ruleSet) remove() error {
	var first error
	for i := len(r.installed) - 1; i >= 0; i-- {
		ir := r.installed[i]
		err := r.ns.run(ir.cmd, append([]string{"-w", "-t", ir.table, "-D", "INPUT"}, ir.spec...)...)
		if first == nil {
			first = err
		}
	}
	r.installed = nil
	return first
}

// ownerTag names this process in rule comments: its PID and its start
// time in clock ticks since boot (proc(5), /proc/PID/stat field 22), so
// that a later process with the same PID is not taken for it.
func ownerTag(pid int) string {
	return fmt.Sprintf("%s pid=%d start=%s", ownerPrefix, pid, startTime(pid))
}

func startTime(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "?"
	}
	// The command name may contain spaces and parentheses: the fields
	// that follow start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "?"
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 {
		return "?"
	}
	return fields[19]
}

// ownerAlive reports whether the owner named in a rule comment still runs.
func ownerAlive(comment string) bool {
	var pid int
	var start string
	for _, f := range strings.Fields(comment) {
		switch {
		case strings.HasPrefix(f, "pid="):
			pid, _ = strconv.Atoi(f[len("pid="):])
		case strings.HasPrefix(f, "start="):
			start = f[len("start="):]
		}
	}
	if pid <= 0 {
		return false
	}
	return startTime(pid) == start && start != "?"
}

// removeStaleRules deletes, in both tables and both families, the rules
// of shapers that no longer run, and returns how many it removed.
func removeStaleRules(ns *netns) (int, error) {
	removed := 0
	for _, cmd := range []string{"iptables", "ip6tables"} {
		if _, err := exec.LookPath(cmd); err != nil {
			continue
		}
		for _, table := range []string{"filter", "mangle"} {
			out, err := ns.output(cmd, "-w", "-t", table, "-S", "INPUT")
			if err != nil {
				// A family or table this kernel lacks holds no rules.
				continue
			}
			for _, line := range strings.Split(out, "\n") {
				comment, ok := ruleComment(line)
				if !ok || !strings.HasPrefix(comment, ownerPrefix) || ownerAlive(comment) {
					continue
				}
				args, ok := deleteArgs(line)
				if !ok {
					continue
				}
				// Another shaper starting at the same time may have
				// removed it first.
				if ns.run(cmd, append([]string{"-w", "-t", table}, args...)...) == nil {
					removed++
				}
			}
		}
	}
	return removed, nil
}

// ruleComment returns the comment of one line of iptables -S output.
func ruleComment(line string) (string, bool) {
	const key = `--comment "`
	i := strings.Index(line, key)
	if i < 0 {
		return "", false
	}
	rest := line[i+len(key):]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return "", false
	}
	return rest[:j], true
}

// deleteArgs turns an "-A INPUT ..." line of iptables -S into the
// arguments that delete it, the quoted comment kept as one argument.
func deleteArgs(line string) ([]string, bool) {
	if !strings.HasPrefix(line, "-A ") {
		return nil, false
	}
	var args []string
	for s := strings.TrimSpace(line[3:]); s != ""; s = strings.TrimSpace(s) {
		if s[0] == '"' {
			j := strings.IndexByte(s[1:], '"')
			if j < 0 {
				return nil, false
			}
			args = append(args, s[1:1+j])
			s = s[j+2:]
			continue
		}
		j := strings.IndexByte(s, ' ')
		if j < 0 {
			j = len(s)
		}
		args = append(args, s[:j])
		s = s[j:]
	}
	return append([]string{"-D"}, args...), true
}

// netns is the network namespace a shaper was started in, held open so
// that its rules are installed and removed there whichever thread asks.
type netns struct{ fd int }

// currentNetns opens the calling thread's network namespace.
func currentNetns() (*netns, error) {
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("open", err)
	}
	return &netns{fd: fd}, nil
}

func (n *netns) close() { unix.Close(n.fd) }

// do runs f on a thread of its own moved into the namespace; the thread is
// discarded afterwards, never returned to other goroutines.
func (n *netns) do(f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			done <- os.NewSyscallError("setns", err)
			return
		}
		done <- f()
	}()
	return <-done
}

// run runs a command in the namespace (a child forked from a locked
// thread has that thread's namespaces).
func (n *netns) run(name string, args ...string) error {
	_, err := n.output(name, args...)
	return err
}

func (n *netns) output(name string, args ...string) (string, error) {
	var out []byte
	err := n.do(func() error {
		var err error
		out, err = exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
		return nil
	})
	return string(out), err
}
