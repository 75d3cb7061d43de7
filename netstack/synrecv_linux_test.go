package netstack

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/backlog-dev/backlog/internal/netnstest"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/tun"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

// TestRepeatedSYNAgainstLinux: a client sends its SYN, and again 300 ms
// later, as if the SYN-ACK had been lost, and again 150 ms after that. The
// host's kernel, behind a TUN device whose other end is this test, and the
// linux personality, on the in-process network, must answer alike: a SYN-ACK
// to the SYN, one to the first repeat, none to the second (within 500 ms of
// the last answered, tcp_oow_rate_limited), and the next from the timer one
// second after the first repeat, not one second after the SYN
// (tcp_check_req restarts it). Both run at once, on the real clock.
func TestRepeatedSYNAgainstLinux(t *testing.T) {
	netnstest.RequireRoot(t)
	var got [2]repeatedSYNRun
	for attempt := 1; ; attempt++ {
		got[0], got[1] = bothSYNTargets(t, func(target synTarget) repeatedSYNRun {
			return runRepeatedSYN(target, 40000+uint16(attempt))
		})
		// The premise: the second repeat left within the rate limit,
		// after the first had had its answer. A machine that starved
		// the test for longer breaks it; the run is repeated, twice
		// at most.
		broken := got[0].premise() + got[1].premise()
		if broken == "" {
			break
		}
		if attempt == 3 {
			t.Fatalf("the premise broke in 3 runs; last: %s", broken)
		}
		t.Logf("run %d: %s; again", attempt, broken)
	}
	want := []string{"the SYN's", "the first repeat's", "the timer's, 1 s after the first repeat"}
	for i, name := range []string{"host kernel", "netstack linux"} {
		if v := got[i].verdict(); !slices.Equal(v, want) {
			t.Errorf("%s: SYN-ACKs %v; want %v (%s)", name, v, want, got[i])
		}
	}
}

// TestOldHalfOpenPrunedAgainstLinux: six clients each send a SYN and never
// their final ACK, to a listener with backlog 8: the host kernel behind a
// TUN device and the linux personality on the in-process network, at once,
// on the real clock. Six requests are more than half of max(8, 8), and
// after their first retransmission none is young, so at the third expiry
// (7 s) reqsk_timer_handler finds the retries down to 2 and gives up on
// requests until 4 are left, below the mark, which it answers. Both must
// send, in each window, 6 SYN-ACKs at once, 6 at 1 s, 6 at 3 s and 4 at 7 s,
// and none in between.
func TestOldHalfOpenPrunedAgainstLinux(t *testing.T) {
	netnstest.RequireRoot(t)
	kern, ours := bothSYNTargets(t, func(target synTarget) []int {
		start := time.Now()
		for i := range 6 {
			target.send(target.syn(40100 + uint16(i)))
		}
		// The kernel's timer wheel rounds a 4 s timer up by as much as
		// 256 ms at HZ 250.
		windows := []time.Duration{0, 500 * time.Millisecond, 900 * time.Millisecond, 1600 * time.Millisecond,
			2900 * time.Millisecond, 3600 * time.Millisecond, 6900 * time.Millisecond, 7600 * time.Millisecond}
		time.Sleep(time.Until(start.Add(windows[len(windows)-1])))
		counts := make([]int, len(windows)/2+1) // the last: outside every window
		for _, s := range target.heard() {
			if s.dport < 40100 || s.dport >= 40106 || s.flags != header.TCPFlagSyn|header.TCPFlagAck {
				continue
			}
			d, w := s.at.Sub(start), len(counts)-1
			for i := 0; i < len(windows); i += 2 {
				if d >= windows[i] && d < windows[i+1] {
					w = i / 2
				}
			}
			counts[w]++
		}
		return counts
	})
	want := []int{6, 6, 6, 4, 0}
	if !slices.Equal(kern, want) {
		t.Errorf("host kernel: SYN-ACKs at once, at 1, 3 and 7 s, and elsewhere: %v; want %v", kern, want)
	}
	if !slices.Equal(ours, want) {
		t.Errorf("netstack linux: SYN-ACKs at once, at 1, 3 and 7 s, and elsewhere: %v; want %v", ours, want)
	}
}

// A synTarget is a server a test reaches with hand-made segments: send
// writes one from the client, heard returns what the server sent it.
type synTarget struct {
	port  uint16 // the server's
	send  func(b []byte)
	heard func() []timedSegment
}

// syn returns the SYN of a client at 198.18.0.2 from port.
func (target synTarget) syn(port uint16) []byte {
	return tcpSpec{
		proto: ipv4.ProtocolNumber, src: tcpip.AddrFrom4([4]byte{198, 18, 0, 2}), dst: tcpip.AddrFrom4([4]byte{198, 18, 0, 1}),
		sport: port, dport: target.port, seq: uint32(port) * 7919, flags: header.TCPFlagSyn, window: 65535, mss: 1460,
	}.build()
}

// bothSYNTargets runs f on the host kernel's target and on netstack's at
// once, and returns what each returned.
func bothSYNTargets[T any](t *testing.T, f func(synTarget) T) (kern, ours T) {
	k, o := kernelSYNTarget(t), netstackSYNTarget(t)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); kern = f(k) }()
	go func() { defer wg.Done(); ours = f(o) }()
	wg.Wait()
	return kern, ours
}

// timedSegment is a segment the server sent, and when.
type timedSegment struct {
	at    time.Time
	flags header.TCPFlags
	dport uint16
}

// repeatedSYNRun is one run's times, from the first SYN.
type repeatedSYNRun struct {
	repeat1, repeat2 time.Duration
	synacks          []time.Duration
}

func (r repeatedSYNRun) String() string {
	return fmt.Sprintf("repeats at %v and %v, SYN-ACKs at %v", r.repeat1, r.repeat2, r.synacks)
}

// premise says how the run's timing failed the test's premise, or "".
func (r repeatedSYNRun) premise() string {
	if !slices.ContainsFunc(r.synacks, func(d time.Duration) bool { return d < r.repeat1 }) {
		return fmt.Sprintf("no answer to the SYN before the first repeat (%s); ", r)
	}
	if r.repeat2-r.repeat1 >= 400*time.Millisecond {
		return fmt.Sprintf("the repeats %v apart; ", r.repeat2-r.repeat1)
	}
	answered := slices.ContainsFunc(r.synacks, func(d time.Duration) bool { return d >= r.repeat1 && d < r.repeat2 })
	late := slices.ContainsFunc(r.synacks, func(d time.Duration) bool { return d >= r.repeat2 && d < r.repeat2+100*time.Millisecond })
	if !answered && late {
		return fmt.Sprintf("the first repeat answered after the second left (%s); ", r)
	}
	return ""
}

// verdict names each SYN-ACK by what it answers.
func (r repeatedSYNRun) verdict() []string {
	var v []string
	for _, d := range r.synacks {
		switch {
		case d < r.repeat1:
			v = append(v, "the SYN's")
		case d < r.repeat2:
			v = append(v, "the first repeat's")
		case d >= r.repeat1+time.Second-20*time.Millisecond && d < r.repeat1+2*time.Second:
			v = append(v, "the timer's, 1 s after the first repeat")
		default:
			v = append(v, fmt.Sprintf("one at %v", d))
		}
	}
	return v
}

// runRepeatedSYN sends a SYN from port, the same SYN again 300 ms later and
// 150 ms after that, and collects the server's SYN-ACKs until 2.5 s after
// the first repeat.
func runRepeatedSYN(target synTarget, port uint16) repeatedSYNRun {
	syn := target.syn(port)
	start := time.Now()
	target.send(syn)
	time.Sleep(time.Until(start.Add(300 * time.Millisecond)))
	var r repeatedSYNRun
	r.repeat1 = time.Since(start)
	target.send(syn)
	time.Sleep(150 * time.Millisecond)
	r.repeat2 = time.Since(start)
	target.send(syn)
	time.Sleep(time.Until(start.Add(r.repeat1 + 2500*time.Millisecond)))
	for _, s := range target.heard() {
		if s.dport == port && s.flags == header.TCPFlagSyn|header.TCPFlagAck {
			r.synacks = append(r.synacks, s.at.Sub(start))
		}
	}
	return r
}

// synTargetBacklog is the backlog of the listeners of kernelSYNTarget and
// netstackSYNTarget.
const synTargetBacklog = 8

// kernelSYNTarget is the host kernel's TCP, listening on 198.18.0.1:8080 in
// a namespace of its own, behind a TUN device: what the test writes to the
// device arrives from 198.18.0.2, and what the kernel sends there is read
// from it.
func kernelSYNTarget(t *testing.T) synTarget {
	ns := netnstest.New(t)
	var dev *os.File
	netnstest.In(t, ns, func() {
		fd, err := tun.Open("tun0")
		if err != nil {
			t.Errorf("opening tun0: %v", err)
			return
		}
		// Non-blocking, so the file reads through Go's poller and
		// Close ends a Read.
		dev = os.NewFile(uintptr(fd), "tun0")
		if err := linkUp("tun0", 1500, netip.MustParsePrefix("198.18.0.1/15")); err != nil {
			t.Error(err)
			return
		}
		// With the backlog exactly synTargetBacklog, which net.Listen
		// does not take.
		ls, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Error(err)
			return
		}
		t.Cleanup(func() { unix.Close(ls) })
		if err := unix.Bind(ls, &unix.SockaddrInet4{Port: 8080, Addr: [4]byte{198, 18, 0, 1}}); err != nil {
			t.Error(err)
			return
		}
		if err := unix.Listen(ls, synTargetBacklog); err != nil {
			t.Error(err)
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	var mu sync.Mutex
	var heard []timedSegment
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 1500)
		for {
			n, err := dev.Read(b)
			if err != nil {
				if !errors.Is(err, os.ErrClosed) {
					t.Errorf("reading tun0: %v", err)
				}
				return
			}
			if s, ok := parse(b[:n], true); ok {
				mu.Lock()
				heard = append(heard, timedSegment{at: time.Now(), flags: s.flags, dport: s.id.LocalPort})
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		dev.Close()
		<-done
	})
	return synTarget{
		port: 8080,
		send: func(b []byte) {
			if _, err := dev.Write(b); err != nil {
				t.Errorf("writing to tun0: %v", err)
			}
		},
		heard: func() []timedSegment {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(heard)
		},
	}
}

// netstackSYNTarget is the linux personality listening on 198.18.0.1:80 of
// an in-process network on the real clock; the client at 198.18.0.2 is
// the network's tap.
func netstackSYNTarget(t *testing.T) synTarget {
	n := NewNetwork(nil)
	t.Cleanup(func() { n.Close() })
	srv, err := n.NewHost() // 198.18.0.1; no host has 198.18.0.2
	if err != nil {
		t.Fatal(err)
	}
	listen(t, srv, "linux", synTargetBacklog)
	var mu sync.Mutex
	var heard []timedSegment
	f := func(b []byte) {
		if s, ok := parse(b, true); ok && s.id.LocalAddress == tcpip.AddrFrom4([4]byte{198, 18, 0, 2}) {
			mu.Lock()
			heard = append(heard, timedSegment{at: time.Now(), flags: s.flags, dport: s.id.LocalPort})
			mu.Unlock()
		}
	}
	n.tap.Store(&f)
	return synTarget{
		port: 80,
		send: func(b []byte) { n.deliver(tcpip.AddrFrom4([4]byte{198, 18, 0, 1}), b) },
		heard: func() []timedSegment {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(heard)
		},
	}
}
