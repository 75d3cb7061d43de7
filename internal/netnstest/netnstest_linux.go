// Package netnstest gives tests network namespaces of their own: a test
// that needs root skips cleanly without it, makes a namespace that is
// removed when it ends, and runs code inside it on an OS thread of its own.
package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// RequireRoot skips the test unless it can make network namespaces and TUN
// devices: root, /dev/net/tun and iproute2's ip.
func RequireRoot(t testing.TB) {
	t.Helper()
	requireNetns(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("needs /dev/net/tun")
	}
}

// requireNetns skips the test unless it can make network namespaces: root
// and iproute2's ip.
func requireNetns(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip")
	}
}

var (
	seq   atomic.Int32
	sweep sync.Once
)

// New makes a network namespace with its loopback up, removed when the test
// ends, and returns its name. Without root or ip it skips the test. The
// first call of a process also removes the namespaces that test processes
// which died without cleaning up (killed by a timeout, say) left behind:
// those whose name carries the PID of a process that no longer runs.
func New(t testing.TB) string {
	t.Helper()
	requireNetns(t)
	sweep.Do(removeStale)
	name := fmt.Sprintf("backlog-test-%d-%d", os.Getpid(), seq.Add(1))
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	Run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// removeStale removes the namespaces named for a test process that is gone.
func removeStale() {
	entries, err := os.ReadDir("/var/run/netns")
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), "backlog-test-")
		if !ok {
			continue
		}
		pid, _, ok := strings.Cut(rest, "-")
		n, err := strconv.Atoi(pid)
		if !ok || err != nil || n == os.Getpid() {
			continue
		}
		if unix.Kill(n, 0) == unix.ESRCH {
			exec.Command("ip", "netns", "del", e.Name()).Run()
		}
	}
}

// Run runs a command and fails the test if it fails.
func Run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// Enter moves the calling goroutine, locked to its OS thread for good, into
// the namespace: for a goroutine that lives there, such as a server's. The
// thread is discarded when the goroutine ends.
func Enter(ns string) error {
	runtime.LockOSThread()
	fd, err := unix.Open("/var/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Setns(fd, unix.CLONE_NEWNET)
}

// In runs f on an OS thread moved into the namespace, and waits for it:
// sockets and devices f creates belong to the namespace. The thread is
// discarded afterwards.
func In(t testing.TB, ns string, f func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		if err := Enter(ns); err != nil {
			done <- err
			return
		}
		f()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatalf("entering namespace %s: %v", ns, err)
	}
}

// Exclusive holds, until the test ends, the one lock that keeps this
// machine's floods apart from its timing-sensitive wire tests, in whatever
// process of the suite each runs: a flood fills the per-CPU backlogs that
// every namespace's received packets pass through (net/core/dev.c
// enqueue_to_backlog, net.core.netdev_max_backlog), and a test beside it
// sees its own packets dropped. It waits for the lock.
func Exclusive(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "backlog-netns.lock"), os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatalf("the exclusive lock: %v", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("the exclusive lock: %v", err)
	}
	t.Cleanup(func() { f.Close() }) // closing releases the lock
}

// SoftnetDrops returns how many received packets the per-CPU backlogs
// have dropped since boot, all CPUs together (/proc/net/softnet_stat, its
// second column): a test that pairs packets across namespaces can tell
// from it that the machine, not the code under test, lost one.
func SoftnetDrops() uint64 {
	b, err := os.ReadFile("/proc/net/softnet_stat")
	if err != nil {
		return 0
	}
	var total uint64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if v, err := strconv.ParseUint(f[1], 16, 64); err == nil {
			total += v
		}
	}
	return total
}
