// Package netnstest gives tests network namespaces of their own: a test
// that needs root skips cleanly without it, makes a namespace that is
// removed when it ends, and runs code inside it on an OS thread of its own.
package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
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

var seq atomic.Int32

// New makes a network namespace with its loopback up, removed when the test
// ends, and returns its name. Without root or ip it skips the test.
func New(t testing.TB) string {
	t.Helper()
	requireNetns(t)
	name := fmt.Sprintf("backlog-test-%d-%d", os.Getpid(), seq.Add(1))
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	Run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
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
