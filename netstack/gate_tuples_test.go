package netstack

import (
	"math/rand/v2"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// TestTupleKeyOfPacket: the key read from an arriving packet's bytes is the
// key of the 4-tuple parse reads from it, for IPv4 (with IP options) and
// IPv6, and it tells apart clients that differ in one field.
func TestTupleKeyOfPacket(t *testing.T) {
	specs := []tcpSpec{
		{proto: ipv4.ProtocolNumber, src: tcpip.AddrFrom4([4]byte{198, 18, 0, 2}), dst: tcpip.AddrFrom4([4]byte{198, 18, 0, 1}), sport: 40000, dport: 80, flags: header.TCPFlagAck},
		{proto: ipv6.ProtocolNumber, src: tcpip.AddrFrom16([16]byte{0xfd, 0xb1, 0x0a, 0xc6, 15: 2}), dst: tcpip.AddrFrom16([16]byte{0xfd, 0xb1, 0x0a, 0xc6, 15: 1}), sport: 40000, dport: 80, flags: header.TCPFlagRst},
	}
	keys := map[uint32]bool{}
	for _, sp := range specs {
		for _, vary := range []func(*tcpSpec){
			func(*tcpSpec) {},
			func(s *tcpSpec) { s.sport++ },
			func(s *tcpSpec) { s.dport++ },
			func(s *tcpSpec) {
				b := s.src.AsSlice()
				b[len(b)-1]++
				s.src = tcpip.AddrFromSlice(b)
			},
		} {
			s := sp
			vary(&s)
			b := s.build()
			seg, ok := parse(b, true)
			if !ok {
				t.Fatalf("%v: does not parse", s)
			}
			if got, want := keyOfPacket(b), keyOf(seg.id); got != want {
				t.Errorf("%v: key of the packet %#x, of its 4-tuple %#x", seg.id, got, want)
			}
			keys[keyOf(seg.id)] = true
		}
	}
	if len(keys) != 8 {
		t.Errorf("8 different 4-tuples have %d keys", len(keys))
	}
	// An IPv4 header with options: the TCP header starts later.
	b := specs[0].build()
	withOpts := append(append(append([]byte{}, b[:20]...), 1, 1, 1, 0), b[20:]...) // NOP NOP NOP EOL
	withOpts[0] = 0x46
	if got, want := keyOfPacket(withOpts), keyOfPacket(b); got != want {
		t.Errorf("with IP options: key %#x, without %#x", got, want)
	}
}

// TestConnTable puts and removes connections at random, many sharing
// their home slot, and checks the table against a map after every step.
func TestConnTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var tab connTable
	want := map[stack.TransportEndpointID]*pending{}
	mk := func(i int) *pending {
		id := stack.TransportEndpointID{LocalPort: 80, LocalAddress: tcpip.AddrFrom4([4]byte{198, 18, 0, 1}),
			RemotePort: uint16(i), RemoteAddress: tcpip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})}
		// A few keys only, so that probes collide and wrap around.
		return &pending{handshake: &handshake{id: id, key: uint32(rng.IntN(8)) * 0x10001}}
	}
	var all []*pending
	for step := range 6000 {
		if len(all) == 0 || rng.IntN(3) > 0 && len(all) < 400 {
			e := mk(step)
			tab.put(e)
			want[e.id] = e
			all = append(all, e)
		} else {
			i := rng.IntN(len(all))
			e := all[i]
			all[i] = all[len(all)-1]
			all = all[:len(all)-1]
			if !tab.remove(e) {
				t.Fatalf("step %d: remove of a held connection failed", step)
			}
			if tab.remove(e) {
				t.Fatalf("step %d: a second remove succeeded", step)
			}
			delete(want, e.id)
		}
		if tab.n != len(want) {
			t.Fatalf("step %d: %d held, want %d", step, tab.n, len(want))
		}
		if step%53 == 0 {
			for _, e := range all {
				if got := tab.get(e.key, e.id); got != e {
					t.Fatalf("step %d: get(%v) = %p, want %p", step, e.id, got, e)
				}
			}
			if e := mk(-1); tab.get(e.key, e.id) != nil {
				t.Fatalf("step %d: found a connection never put", step)
			}
		}
	}
	// Past 2*shrinkAbove slots, an emptied table lets them go.
	for i := range 3 * shrinkAbove {
		e := mk(100000 + i)
		tab.put(e)
		all = append(all, e)
	}
	for _, e := range all {
		tab.remove(e)
	}
	if tab.n != 0 || tab.slots != nil {
		t.Errorf("emptied table: %d held, %d slots kept", tab.n, len(tab.slots))
	}
}

// TestResetRing: a reset is remembered for a second, taken once, and
// forgotten once resetSlots later resets have followed it.
func TestResetRing(t *testing.T) {
	var r resetRing
	at := tcpip.MonotonicTime{}.Add(time.Hour)
	r.note(7, at)
	if r.take(8, at) {
		t.Error("took a reset never noted")
	}
	if !r.take(7, at.Add(time.Second)) {
		t.Error("a reset a second old was forgotten")
	}
	if r.take(7, at.Add(time.Second)) {
		t.Error("took a reset twice")
	}
	r.note(7, at)
	if r.take(7, at.Add(time.Second+time.Millisecond)) {
		t.Error("took a reset older than a second")
	}
	r.note(9, at)
	for i := range resetSlots {
		r.note(uint32(100+i), at)
	}
	if r.take(9, at) {
		t.Errorf("took a reset %d later ones pushed out", resetSlots)
	}
	if !r.take(100+resetSlots-1, at) {
		t.Error("the latest reset was forgotten")
	}
}

// TestBadChecksumsNotCounted: a SYN or a final ACK whose IPv4 header
// checksum or TCP checksum is wrong is the stack's to drop, and the queue
// does not count it; the same segments with right checksums, which the gate
// marks as checked for the stack, open and complete the connection. The
// host's one receive goroutine takes packets in order, so once a later
// SYN has its SYN-ACK, the gate has decided everything sent before it.
func TestBadChecksumsNotCounted(t *testing.T) {
	n, srv, _ := pair(t, nil)
	l := listen(t, srv, "linux", 5)
	corrupt := []struct {
		what  string
		spoil func([]byte)
	}{
		{"IP header", func(b []byte) { b[10] ^= 0xff }},
		{"TCP", func(b []byte) { b[20+16] ^= 0xff }},
	}
	bad := newRawPeer(t, n, serverAddr, "198.18.99.2", 46300, time.Time{})
	for _, c := range corrupt {
		syn := bad.segment(header.TCPFlagSyn, bad.isn, 0)
		syn.mss = 1460
		b := syn.build()
		c.spoil(b)
		n.deliver(bad.server, b)
	}
	p := newRawPeer(t, n, serverAddr, "198.18.99.3", 46301, time.Time{})
	p.syn()
	sa := p.await(t, 1)[0]
	if sa.flags != header.TCPFlagSyn|header.TCPFlagAck {
		t.Fatalf("answer to a good SYN: %+v, want a SYN-ACK", sa)
	}
	if got := l.HalfOpen(); got != 1 {
		t.Fatalf("after two SYNs with bad checksums and a good one: %d half-open, want 1", got)
	}
	for _, c := range corrupt {
		b := p.segment(header.TCPFlagAck, p.isn+1, sa.seq+1).build()
		c.spoil(b)
		n.deliver(p.server, b)
	}
	later := newRawPeer(t, n, serverAddr, "198.18.99.4", 46302, time.Time{})
	later.syn()
	later.await(t, 1)
	if l.Len() != 0 || l.HalfOpen() != 2 {
		t.Fatalf("after two final ACKs with bad checksums and another SYN: %d queued, %d half-open; want 0, 2", l.Len(), l.HalfOpen())
	}
	p.ackSYNACK(sa.seq)
	c := acceptWithin(t, l)
	c.Close()
	// The stack checked what the gate let by unchecked: the two segments
	// with a bad TCP checksum (those with a bad IP header end at IP).
	if got := srv.Stack().Stats().TCP.ChecksumErrors.Value(); got != 2 {
		t.Errorf("the stack counted %d TCP checksum errors, want 2", got)
	}
}
