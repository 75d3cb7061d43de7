package netstack

import (
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

// rawPeer is a TCP client that exists only as the packets a test writes: it
// has an address no host owns, so what the server sends it is seen by the
// network's tap and goes nowhere else. It makes half-open connections at
// will.
type rawPeer struct {
	n      *Network
	clock  tcpip.Clock
	addr   tcpip.Address
	port   uint16
	isn    uint32
	server tcpip.Address

	mu   sync.Mutex
	got  []heard
	wake chan struct{}
}

// heard is a segment the server sent the peer, and when.
type heard struct {
	at    time.Duration // since the peer's SYN
	order uint64        // its place among everything the network's tap saw
	flags header.TCPFlags
	seq   uint32
	ack   uint32
	// syn is a SYN-ACK's options; tsval and tsecr any segment's
	// timestamps (ts says whether it had them); payload its data.
	syn          header.TCPSynOptions
	ts           bool
	tsval, tsecr uint32
	payload      []byte
	window       uint16
}

// taps lets several raw peers share the network's one tap.
type taps struct {
	mu    sync.Mutex
	peers map[tcpip.Address]map[uint16]*rawPeer
	seen  uint64
}

func (ts *taps) see(b []byte) {
	s, ok := parse(b, true)
	if !ok {
		return
	}
	ts.mu.Lock()
	ts.seen++
	order := ts.seen
	p := ts.peers[s.id.LocalAddress][s.id.LocalPort]
	ts.mu.Unlock()
	if p != nil {
		p.hear(s, order)
	}
}

var tapsOf sync.Map // *Network → *taps

func newRawPeer(t testing.TB, n *Network, server, addr string, port uint16, start time.Time) *rawPeer {
	t.Helper()
	v, loaded := tapsOf.LoadOrStore(n, &taps{peers: map[tcpip.Address]map[uint16]*rawPeer{}})
	ts := v.(*taps)
	if !loaded {
		f := ts.see
		n.tap.Store(&f)
	}
	p := &rawPeer{
		n: n, clock: n.clock, addr: tcpip.AddrFrom4Slice(ip4(addr)), port: port,
		isn: uint32(port) * 7919, server: tcpip.AddrFrom4Slice(ip4(server)),
		wake: make(chan struct{}, 1),
	}
	ts.mu.Lock()
	if ts.peers[p.addr] == nil {
		ts.peers[p.addr] = map[uint16]*rawPeer{}
	}
	ts.peers[p.addr][port] = p
	ts.mu.Unlock()
	return p
}

func ip4(s string) []byte {
	var b [4]byte
	var i, v int
	for _, c := range s + "." {
		if c == '.' {
			b[i], v, i = byte(v), 0, i+1
			continue
		}
		v = v*10 + int(c-'0')
	}
	return b[:]
}

var synSentAt sync.Map // *rawPeer → tcpip.MonotonicTime

func (p *rawPeer) hear(s seg, order uint64) {
	var at time.Duration
	if v, ok := synSentAt.Load(p); ok {
		at = p.clock.NowMonotonic().Sub(v.(tcpip.MonotonicTime))
	}
	h := heard{at: at, order: order, flags: s.flags, seq: s.seq, ack: s.ack, syn: s.syn, window: s.window}
	h.tsval, h.tsecr, h.ts = s.timestamps()
	h.payload = append([]byte(nil), s.tcp[s.tcp.DataOffset():]...)
	p.mu.Lock()
	p.got = append(p.got, h)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *rawPeer) send(flags header.TCPFlags, seq, ack uint32) {
	t := p.segment(flags, seq, ack)
	if flags == header.TCPFlagSyn {
		t.mss = 1460
	}
	p.sendSpec(t)
}

// segment returns a segment from the peer to the server's port 80, for
// sendSpec.
func (p *rawPeer) segment(flags header.TCPFlags, seq, ack uint32) tcpSpec {
	return tcpSpec{
		proto: ipv4.ProtocolNumber, src: p.addr, dst: p.server, sport: p.port, dport: 80,
		seq: seq, ack: ack, flags: flags, window: 65535,
	}
}

// sendSpec sends a segment of the peer's; a SYN is dated for heard.
func (p *rawPeer) sendSpec(t tcpSpec) {
	if t.flags == header.TCPFlagSyn {
		synSentAt.Store(p, p.clock.NowMonotonic())
	}
	p.n.deliver(p.server, t.build())
}

// syn sends the peer's SYN.
func (p *rawPeer) syn() {
	synSentAt.Store(p, p.clock.NowMonotonic())
	p.send(header.TCPFlagSyn, p.isn, 0)
}

// ackSYNACK sends the final ACK of the handshake, for the server ISN heard.
func (p *rawPeer) ackSYNACK(serverISN uint32) {
	p.send(header.TCPFlagAck, p.isn+1, serverISN+1)
}

// heard returns what the peer has heard so far.
func (p *rawPeer) heard() []heard {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]heard(nil), p.got...)
}

// await waits, in real time, until the peer has heard n segments.
func (p *rawPeer) await(t testing.TB, n int) []heard {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if h := p.heard(); len(h) >= n {
			return h
		}
		select {
		case <-p.wake:
		case <-deadline:
			t.Fatalf("peer %v:%d heard %d segments; waited for %d: %+v", p.addr, p.port, len(p.heard()), n, p.heard())
		}
	}
}

// waitFor polls cond in real time until it holds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
