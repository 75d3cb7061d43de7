package netstack

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/netnstest"
	"github.com/backlog-dev/backlog/kernel"
	"golang.org/x/sys/unix"
)

// TestWireAgainstLinux sets the linux personality, over TUN, against this
// host's kernel, with the same real kernel clients on both. The clients
// live in one network namespace; the kernel's server in another, across a
// veth; ours behind a TUN device in the clients' namespace. Each client
// connects to both at the same instant, from ports of its own, and a
// packet capture in the clients' namespace records, per client, when it
// sent its SYNs and what it heard back. Every cell of backlog {0, 1, 5} x
// tcp_syncookies {0, 1, 2} x tcp_abort_on_overflow {0, 1} x application
// {never accepts, accepts one 2 s after listen}, and two cells that call
// listen() again, must give per client, in order: the same outcome, the
// same SYN retransmission times, the same number of SYN-ACKs and of
// resets.
//
// Times are chosen so that no two events race. The client kernel's timer
// wheel rounds each 1 s SYN timeout up to a tick of 32 ms (HZ=250; see
// wheelSlack), so retransmissions land on a grid: clients start 70 ms
// apart, so that no two of them retransmit in the same tick, and every
// event (a client's SYN, a server's SYN-ACK sent again) comes some whole
// number of ticked seconds after a client's start, between 50 and 750 ms
// into each 1.024 s; the application acts at whole seconds, 70 ms before
// the first client; the capture ends at 6 s, in the quiet between. A
// server or an application that the machine starves for longer than that
// meets the events in another order; the capture shows it (see check),
// and the cell runs again.
func TestWireAgainstLinux(t *testing.T) {
	netnstest.RequireRoot(t)
	netnstest.Exclusive(t) // no flood beside it: see Exclusive
	var cells []wireCell
	for _, b := range []int{0, 1, 5} {
		for _, cookies := range []int{0, 1, 2} {
			for _, abort := range []int{0, 1} {
				for _, acceptAt := range []time.Duration{0, 2 * time.Second} {
					cells = append(cells, wireCell{backlog: b, cookies: cookies, abort: abort, acceptAt: acceptAt})
				}
			}
		}
	}
	cells = append(cells,
		wireCell{backlog: 1, cookies: 1, relistenAt: 2 * time.Second, relistenTo: 5},
		wireCell{backlog: 5, cookies: 1, relistenAt: time.Second, relistenTo: 1, acceptAt: 2 * time.Second},
	)
	// The cells run 20 at a time, each as a subtest of its own from a
	// goroutine of its own (t.Run may be called from several at once):
	// t.Parallel would hold them to -test.parallel, the number of CPUs,
	// though a cell spends its 6 s waiting on timers.
	sem := make(chan struct{}, 20)
	var cellsDone sync.WaitGroup
	defer cellsDone.Wait()
	for _, c := range cells {
		sem <- struct{}{}
		cellsDone.Add(1)
		go func() {
			defer cellsDone.Done()
			defer func() { <-sem }()
			t.Run(c.String(), func(t *testing.T) { c.check(t) })
		}()
	}
}

// check runs the cell and compares, client by client.
func (c wireCell) check(t *testing.T) {
	// A difference is a verdict on the rules only when both servers
	// met the same events in the same order. When the machine's
	// receive backlogs dropped packets meanwhile (its counter says so),
	// the cell runs once more; when a server or an application was
	// starved so long that it met the events in another order (the
	// capture and the application's own clock say so), up to twice
	// more. A difference with neither is reported at once.
	for attempt := 1; ; attempt++ {
		drops := netnstest.SoftnetDrops()
		kern, ours, appLate := c.run(t)
		lost := netnstest.SoftnetDrops() - drops
		var diffs []string
		for i := range kern {
			t.Logf("client %d: kernel %v; netstack %v", i, kern[i], ours[i])
			if d := kern[i].diff(ours[i]); d != "" {
				diffs = append(diffs, fmt.Sprintf("client %d: %s\n\tkernel:  %v\n\tnetstack: %v", i, d, kern[i], ours[i]))
			}
		}
		if len(diffs) > 0 && lost > 0 && attempt == 1 {
			t.Logf("the machine dropped %d received packets during the run; running the cell again", lost)
			continue
		}
		late := lateAnswer(kern, ours)
		if appLate > wireAppSlack {
			late = fmt.Sprintf("an application acted %v late", appLate.Round(time.Millisecond))
		}
		if len(diffs) > 0 && late != "" && attempt < 3 {
			t.Logf("%s, so the two servers did not decide the same sequence of events; running the cell again, past %d differences:\n%s", late, len(diffs), strings.Join(diffs, "\n"))
			continue
		}
		for _, d := range diffs {
			t.Error(d)
		}
		if len(diffs) > 0 && lost > 0 {
			t.Logf("the machine dropped %d received packets during the run", lost)
		}
		if len(diffs) > 0 && late != "" {
			t.Logf("on this last attempt too, %s", late)
		}
		break
	}
}

// wireAppSlack is how late an application may act, listen() again or
// accept(), before the cell's premise is broken: every client's SYN comes
// at least 50 ms away from a whole second (see TestWireAgainstLinux).
const wireAppSlack = 40 * time.Millisecond

// lateAnswer says which server answered a client's SYN only after
// another client's later SYN had left, or "" if neither did. The cells
// are built on each server deciding every SYN before the next one comes,
// at least 50 ms later; a server starved that long by a busy machine
// (ours is a process, and under the race detector a slow one) meets the
// SYNs in another order than the kernel's, and the difference is the
// machine's, not the rules'.
func lateAnswer(kern, ours []wireClient) string {
	for _, side := range []struct {
		name    string
		clients []wireClient
	}{{"the kernel", kern}, {"netstack", ours}} {
		for i, c := range side.clients {
			if c.answered.IsZero() {
				continue
			}
			// The SYN it answered: the last before the answer.
			var asked time.Time
			for _, at := range c.syns {
				if at.Before(c.answered) {
					asked = at
				}
			}
			if asked.IsZero() {
				continue
			}
			for j, d := range side.clients {
				for _, at := range d.syns {
					if j != i && at.After(asked) && at.Before(c.answered) {
						return fmt.Sprintf("%s answered client %d %v after client %d's SYN", side.name, i, c.answered.Sub(at).Round(time.Millisecond), j)
					}
				}
			}
		}
	}
	return ""
}

// A wireCell is one configuration of the server and its application.
type wireCell struct {
	backlog, cookies, abort int
	acceptAt                time.Duration // 0: never
	relistenAt              time.Duration // 0: no listen() again
	relistenTo              int
}

func (c wireCell) String() string {
	s := fmt.Sprintf("backlog=%d,syncookies=%d,abort=%d", c.backlog, c.cookies, c.abort)
	if c.acceptAt > 0 {
		s += fmt.Sprintf(",accept-one-at=%v", c.acceptAt)
	}
	if c.relistenAt > 0 {
		s += fmt.Sprintf(",listen(%d)-at=%v", c.relistenTo, c.relistenAt)
	}
	return s
}

// What each client met.
type wireClient struct {
	Outcome string          // connected, refused, reset, no answer
	Retx    []time.Duration // when it sent its SYN again, after the first
	SYNACKs int
	RSTs    int
	first   time.Time // its first SYN
	// syns are when it sent its SYNs, and answered when the server
	// first answered one, with a SYN-ACK or a reset (zero if never).
	syns     []time.Time
	answered time.Time
}

func (w wireClient) String() string {
	var retx []string
	for _, d := range w.Retx {
		retx = append(retx, d.Round(time.Millisecond).String())
	}
	return fmt.Sprintf("%s, SYN again at [%s], %d SYN-ACKs, %d RSTs", w.Outcome, strings.Join(retx, " "), w.SYNACKs, w.RSTs)
}

// wheelSlack is how late the client kernel's retransmission timer may
// fire: the timer wheel rounds a timeout up to its level's granularity
// (kernel/time/timer.c), which for the 1 s of a SYN's linear timeouts is 8
// jiffies (level 1, HZ 100 to 300) or 64 (level 2, HZ 1000), at most 80
// ms. Two sockets whose SYNs left a little apart may land on different
// ticks of it.
const wheelSlack = 80 * time.Millisecond

func (w wireClient) diff(o wireClient) string {
	// The two sockets' first SYNs left this far apart.
	gap := w.first.Sub(o.first)
	if gap < 0 {
		gap = -gap
	}
	switch {
	case w.Outcome != o.Outcome:
		return "outcomes differ"
	case len(w.Retx) != len(o.Retx):
		return "SYN retransmissions differ"
	case w.SYNACKs != o.SYNACKs:
		return "SYN-ACKs differ"
	case w.RSTs != o.RSTs:
		return "resets differ"
	}
	for i := range w.Retx {
		if d := w.Retx[i] - o.Retx[i]; d > wheelSlack+gap || d < -wheelSlack-gap {
			return "SYN retransmission times differ"
		}
	}
	return ""
}

// wireStart is when client i connects, after the listeners are made.
func wireStart(i int) time.Duration {
	return 50*time.Millisecond + time.Duration(i)*70*time.Millisecond
}

const (
	wireKernelPort = 20000 // client i connects to the kernel from port 20000+i
	wireOurPort    = 21000 // and to netstack from 21000+i
	wireWindow     = 6 * time.Second
)

// run sets up the cell, runs its clients, and returns what each met on the
// kernel and on netstack.
func (c wireCell) run(t *testing.T) (kern, ours []wireClient, appLate time.Duration) {
	clients := backlog.Host().CapacityOf(c.backlog) + 3
	if c.relistenTo > c.backlog {
		clients = backlog.Host().CapacityOf(c.relistenTo) + 3
	}
	cns, kns := netnstest.New(t), netnstest.New(t)
	netnstest.Run(t, "ip", "-n", cns, "link", "add", "kv0", "type", "veth", "peer", "name", "kv1", "netns", kns)
	netnstest.Run(t, "ip", "-n", cns, "addr", "add", "198.18.1.2/24", "dev", "kv0")
	netnstest.Run(t, "ip", "-n", cns, "link", "set", "kv0", "up")
	netnstest.Run(t, "ip", "-n", kns, "addr", "add", "198.18.1.1/24", "dev", "kv1")
	netnstest.Run(t, "ip", "-n", kns, "link", "set", "kv1", "up")

	// The kernel's server, and its settings read back as a personality.
	var p backlog.Personality
	var kl *kernel.Listener
	netnstest.In(t, kns, func() {
		for file, v := range map[string]int{"tcp_syncookies": c.cookies, "tcp_abort_on_overflow": c.abort} {
			if err := os.WriteFile("/proc/sys/net/ipv4/"+file, []byte(fmt.Sprint(v)), 0); err != nil {
				t.Errorf("%s: %v", file, err)
				return
			}
		}
		var err error
		if p, err = kernel.HostPersonality(); err != nil {
			t.Errorf("reading the namespace's settings: %v", err)
			return
		}
		lc := kernel.ListenConfig{Backlog: backlog.Exactly(c.backlog)}
		if kl, err = lc.Listen(context.Background(), "tcp4", "198.18.1.1:80"); err != nil {
			t.Errorf("kernel listener: %v", err)
		}
	})
	if kl == nil {
		t.FailNow()
	}
	t.Cleanup(func() { kl.Close() })

	// Ours, behind a TUN device in the clients' namespace.
	var h *Host
	netnstest.In(t, cns, func() {
		var err error
		h, err = AttachTUN(TUNConfig{
			Name: "tun0", Addrs: []netip.Addr{netip.MustParseAddr("198.18.2.2")},
			KernelPrefix: netip.MustParsePrefix("198.18.2.1/24"),
		})
		if err != nil {
			t.Errorf("AttachTUN: %v", err)
		}
	})
	if h == nil {
		t.FailNow()
	}
	t.Cleanup(func() { h.Close() })
	ol, err := h.Listen(context.Background(), "tcp4", "198.18.2.2:80", &ListenConfig{Personality: p, Backlog: backlog.Exactly(c.backlog)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ol.Close() })

	capture := startWireCapture(t, cns, "kv0", "tun0")
	socks := newWireClients(t, cns, clients)
	start := time.Now()
	var app sync.WaitGroup
	var accepted []net.Conn
	var acceptedMu sync.Mutex
	for _, l := range []backlog.Listener{kl, ol} {
		app.Add(1)
		go func() {
			defer app.Done()
			conn, late := c.application(l, start)
			acceptedMu.Lock()
			if conn != nil {
				accepted = append(accepted, conn)
			}
			appLate = max(appLate, late)
			acceptedMu.Unlock()
		}()
	}
	defer func() {
		for _, conn := range accepted {
			conn.Close()
		}
	}()
	for i := range clients {
		time.Sleep(time.Until(start.Add(wireStart(i))))
		socks[i].connect()
	}
	time.Sleep(time.Until(start.Add(wireWindow)))
	seen := capture.stop()
	app.Wait()
	for i, s := range socks {
		kern = append(kern, seen.client(wireKernelPort+i, s.kernelOutcome()))
		ours = append(ours, seen.client(wireOurPort+i, s.ourOutcome()))
	}
	return kern, ours, appLate
}

// application is the server's program: it calls listen() again and accepts
// one connection at the cell's times. It returns the connection it
// accepted, kept open so that its client stays connected, and how late
// after its time the later of its acts was done.
func (c wireCell) application(l backlog.Listener, start time.Time) (accepted net.Conn, late time.Duration) {
	type act struct {
		at time.Duration
		do func()
	}
	var acts []act
	if c.relistenAt > 0 {
		acts = append(acts, act{c.relistenAt, func() { l.SetBacklog(c.relistenTo) }})
	}
	if c.acceptAt > 0 {
		acts = append(acts, act{c.acceptAt, func() {
			l.(interface{ SetDeadline(time.Time) error }).SetDeadline(start.Add(wireWindow))
			if conn, err := l.Accept(); err == nil {
				accepted = conn
			}
		}})
	}
	if len(acts) == 2 && acts[1].at < acts[0].at {
		acts[0], acts[1] = acts[1], acts[0]
	}
	for _, a := range acts {
		time.Sleep(time.Until(start.Add(a.at)))
		a.do()
		late = max(late, time.Since(start.Add(a.at)))
	}
	return accepted, late
}

// wireSocks is one client's pair of sockets, made in the clients'
// namespace, bound to their ports and not blocking.
type wireSocks struct{ kernel, ours int }

func newWireClients(t *testing.T, ns string, n int) []wireSocks {
	socks := make([]wireSocks, n)
	netnstest.In(t, ns, func() {
		for i := range socks {
			socks[i].kernel = wireSocket(t, wireKernelPort+i)
			socks[i].ours = wireSocket(t, wireOurPort+i)
		}
	})
	t.Cleanup(func() {
		for _, s := range socks {
			unix.Close(s.kernel)
			unix.Close(s.ours)
		}
	})
	return socks
}

func wireSocket(t *testing.T, port int) int {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{0, 0, 0, 0}, Port: port}); err != nil {
		t.Fatalf("binding port %d: %v", port, err)
	}
	return fd
}

// connect starts both connects at once.
func (s wireSocks) connect() {
	unix.Connect(s.kernel, &unix.SockaddrInet4{Addr: [4]byte{198, 18, 1, 1}, Port: 80})
	unix.Connect(s.ours, &unix.SockaddrInet4{Addr: [4]byte{198, 18, 2, 2}, Port: 80})
}

func (s wireSocks) kernelOutcome() string { return wireOutcome(s.kernel) }
func (s wireSocks) ourOutcome() string    { return wireOutcome(s.ours) }

// wireOutcome reads what became of a client's connect from its socket:
// the TCP state, and the error a reset left (net/ipv4/tcp_input.c
// tcp_reset: ECONNREFUSED in SYN-SENT, ECONNRESET once established).
func wireOutcome(fd int) string {
	var info unix.TCPInfo
	n := uint32(unsafe.Sizeof(info))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_INFO, uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&n)), 0); e != 0 {
		return "unreadable: " + e.Error()
	}
	soerr, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	switch {
	case info.State == unix.BPF_TCP_SYN_SENT:
		return "no answer"
	case info.State == unix.BPF_TCP_ESTABLISHED || info.State == unix.BPF_TCP_CLOSE_WAIT:
		return "connected"
	case unix.Errno(soerr) == unix.ECONNREFUSED:
		return "refused"
	case unix.Errno(soerr) == unix.ECONNRESET:
		return "reset"
	}
	return fmt.Sprintf("state %d, error %v", info.State, unix.Errno(soerr))
}

// wireCapture records, from packet sockets in the clients' namespace, the
// SYNs each client port sent and the SYN-ACKs and resets it was sent, with
// the kernel's own timestamps.
type wireCapture struct {
	fds  []int
	stop func() wireSeen
}

type wireSeen map[int]*wireEvents // by client port

type wireEvents struct {
	syns          []time.Time
	synacks, rsts int
	answer        time.Time // the server's first SYN-ACK or reset
}

func (ws wireSeen) client(port int, outcome string) wireClient {
	c := wireClient{Outcome: outcome}
	e := ws[port]
	if e == nil {
		return c
	}
	for _, at := range e.syns[min(1, len(e.syns)):] {
		c.Retx = append(c.Retx, at.Sub(e.syns[0]))
	}
	c.SYNACKs, c.RSTs, c.syns, c.answered = e.synacks, e.rsts, e.syns, e.answer
	if len(e.syns) > 0 {
		c.first = e.syns[0]
	}
	return c
}

func startWireCapture(t *testing.T, ns string, ifaces ...string) *wireCapture {
	wc := &wireCapture{}
	netnstest.In(t, ns, func() {
		for _, name := range ifaces {
			fd, err := packetSocket(name)
			if err != nil {
				t.Errorf("capture on %s: %v", name, err)
				return
			}
			wc.fds = append(wc.fds, fd)
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	var mu sync.Mutex
	seen := wireSeen{}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, fd := range wc.fds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf, oob := make([]byte, 2048), make([]byte, 256)
			for {
				select {
				case <-done:
					return
				default:
				}
				n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, 0)
				if err != nil {
					continue // the receive timeout, to look at done
				}
				at := packetTime(oob[:oobn])
				mu.Lock()
				seen.note(buf[:n], at)
				mu.Unlock()
			}
		}()
	}
	var once sync.Once
	wc.stop = func() wireSeen {
		once.Do(func() {
			close(done)
			wg.Wait()
			for _, fd := range wc.fds {
				unix.Close(fd)
			}
		})
		return seen
	}
	t.Cleanup(func() { wc.stop() })
	return wc
}

// packetSocket opens a packet socket that receives the packets of one
// interface, without their link header, with kernel timestamps and a
// receive timeout of 50 ms. It asks for every protocol: only such a socket
// sees the packets leaving too (net/core/dev.c dev_queue_xmit_nit hands
// them to ptype_all alone).
func packetSocket(iface string) (int, error) {
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return -1, err
	}
	ifi, err := interfaceIndex(fd, iface)
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi})
	}
	if err == nil {
		err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}
	if err == nil {
		tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
		err = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func interfaceIndex(fd int, name string) (int, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, err
	}
	return int(ifr.Uint32()), nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetTime returns the kernel's receive timestamp from a message's
// control data, or now.
func packetTime(oob []byte) time.Time {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err == nil {
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
				sec := int64(binary.NativeEndian.Uint64(m.Data))
				nsec := int64(binary.NativeEndian.Uint64(m.Data[8:]))
				return time.Unix(sec, nsec)
			}
		}
	}
	return time.Now()
}

// note records one captured packet, if it is TCP to or from a client
// port.
func (ws wireSeen) note(b []byte, at time.Time) {
	if len(b) < 20 || b[0]>>4 != 4 || b[9] != unix.IPPROTO_TCP {
		return
	}
	hl := int(b[0]&0xf) * 4
	if len(b) < hl+20 {
		return
	}
	tcp := b[hl:]
	sport, dport := int(binary.BigEndian.Uint16(tcp)), int(binary.BigEndian.Uint16(tcp[2:]))
	flags := tcp[13]
	const syn, rst, ack = 2, 4, 16
	event := func(port int) *wireEvents {
		e := ws[port]
		if e == nil {
			e = &wireEvents{}
			ws[port] = e
		}
		return e
	}
	switch {
	case dport == 80 && flags&(syn|ack) == syn:
		e := event(sport)
		e.syns = append(e.syns, at)
	case sport == 80 && flags&(syn|ack) == syn|ack:
		e := event(dport)
		e.synacks++
		e.answered(at)
	case sport == 80 && flags&rst != 0:
		e := event(dport)
		e.rsts++
		e.answered(at)
	}
}

func (e *wireEvents) answered(at time.Time) {
	if e.answer.IsZero() {
		e.answer = at
	}
}
