package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"
)

// A server under test: the host's kernel or a netstack listener.
type diffServer interface {
	dial(t *testing.T) outcome
	accept(t *testing.T)
	relisten(t *testing.T, n int)
}

// kernelServer is a listening socket of the host's kernel on loopback,
// made with the exact backlog (net.Listen would pass somaxconn).
type kernelServer struct {
	fd   int
	addr string
}

func newKernelServer(t *testing.T, backlogN int) *kernelServer {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, backlogN); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	return &kernelServer{fd: fd, addr: fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)}
}

// diffTimeout is shorter than any client's first SYN retransmission (1 s),
// so an ignored SYN shows as a timeout.
const diffTimeout = 300 * time.Millisecond

func (k *kernelServer) dial(t *testing.T) outcome {
	c, err := net.DialTimeout("tcp", k.addr, diffTimeout)
	switch {
	case err == nil:
		t.Cleanup(func() { c.Close() })
		return connected
	case errors.Is(err, syscall.ECONNREFUSED):
		return refused
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return timedOut
	}
	t.Logf("kernel dial: %v", err)
	return otherErr
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (k *kernelServer) accept(t *testing.T) {
	nfd, _, err := syscall.Accept(k.fd)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(nfd)
}

func (k *kernelServer) relisten(t *testing.T, n int) {
	if err := syscall.Listen(k.fd, n); err != nil {
		t.Fatal(err)
	}
}

type netstackServer struct {
	l   *Listener
	cli *Host
}

func (s *netstackServer) dial(t *testing.T) outcome {
	o, _ := try(t, s.cli, serverAddr+":80", diffTimeout)
	return o
}

func (s *netstackServer) accept(t *testing.T) {
	c, err := s.l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func (s *netstackServer) relisten(t *testing.T, n int) {
	if err := s.l.SetBacklog(n); err != nil {
		t.Fatal(err)
	}
}

// A step of a scenario: dial some clients, accept some, or listen again.
type step struct {
	dials, accepts int
	relisten       int // listen() again with this backlog when > 0
}

func (st step) run(t *testing.T, s diffServer) (got []outcome) {
	if st.relisten > 0 {
		s.relisten(t, st.relisten)
	}
	for i := 0; i < st.accepts; i++ {
		s.accept(t)
	}
	for i := 0; i < st.dials; i++ {
		got = append(got, s.dial(t))
	}
	return got
}

// TestDifferentialAgainstLinux runs scenarios against the host's kernel on
// loopback and against the linux personality (with this host's
// net.core.somaxconn, which the backlogs here do not reach), dialing one
// client at a time, and requires the same outcome for every client.
func TestDifferentialAgainstLinux(t *testing.T) {
	scenarios := []struct {
		name    string
		backlog int
		steps   []step
	}{
		{"listen(0), never accept", 0, []step{{dials: 3}}},
		{"listen(1), never accept", 1, []step{{dials: 4}}},
		{"listen(5), never accept", 5, []step{{dials: 8}}},
		{"listen(3), accept one, two more", 3, []step{{dials: 5}, {accepts: 1, dials: 2}}},
		{"listen(5) then listen(2) keeps the queue", 5, []step{{dials: 6}, {relisten: 2, dials: 1}, {accepts: 4, dials: 2}}},
		{"listen(1) then listen(4) grows", 1, []step{{dials: 3}, {relisten: 4, dials: 4}}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			k := newKernelServer(t, sc.backlog)
			_, srv, cli := pair(t, nil)
			l := listen(t, srv, "linux", 1)
			if err := l.SetBacklog(sc.backlog); err != nil {
				t.Fatal(err)
			}
			ns := &netstackServer{l: l, cli: cli}
			for i, st := range sc.steps {
				want := st.run(t, k)
				got := st.run(t, ns)
				if !slices.Equal(got, want) {
					t.Errorf("step %d %+v: netstack %v; kernel %v", i, st, got, want)
				}
			}
		})
	}
}
