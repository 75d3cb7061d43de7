package netstack

import (
	"slices"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/faketime"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// repeatSYN sends the peer's SYN again, as its client would retransmit it:
// the same segment, its time base kept.
func (p *rawPeer) repeatSYN() {
	t := p.segment(header.TCPFlagSyn, p.isn, 0)
	t.mss = 1460
	p.n.deliver(p.server, t.build())
}

// flushServer waits until the server has handled everything sent to it so
// far: prober's SYN to a port nobody listens on is answered, with a RST, by
// the same goroutine that takes every packet to the server in turn.
func flushServer(t *testing.T, prober *rawPeer) {
	t.Helper()
	before := len(prober.heard())
	s := prober.segment(header.TCPFlagSyn, prober.isn, 0)
	s.dport = 81
	prober.n.deliver(prober.server, s.build())
	prober.await(t, before+1)
}

// TestRepeatedSYNOnTheWire: a client whose SYN-ACK was lost sends its SYN
// again while the server holds the connection half-open. Under a virtual
// clock, each personality's server answers as its system does: Linux
// (tcp_check_req) sends the SYN-ACK again, restarts its timer on the
// current step and ignores a repeat within 500 ms of the last it answered;
// FreeBSD (syncache_add) sends it again every time and starts its whole
// schedule over; gVisor leaves it to its TCP, which answers with at most a
// bare ACK, and keeps its schedule. The SYN-ACKs' times, and when the
// half-open connection is given up, show it.
func TestRepeatedSYNOnTheWire(t *testing.T) {
	s := time.Second
	ms := time.Millisecond
	for _, tc := range []struct {
		personality string
		repeats     []time.Duration // when the client sends its SYN again
		synacks     []time.Duration // when the server sends a SYN-ACK
		giveUp      time.Duration   // when it forgets the connection
		// stackACKs is whether the server's TCP answers a repeat with a
		// bare ACK, on a goroutine of its own and so at no moment of the
		// virtual clock a test can name.
		stackACKs bool
	}{
		{
			// 2 s: after one retransmission, the timer waits its
			// current step (2 s) from now; 2.2 s: rate-limited; 2.6 s:
			// answered, the step restarted again.
			personality: "linux",
			repeats:     []time.Duration{2 * s, 2200 * ms, 2600 * ms},
			synacks:     []time.Duration{0, 1 * s, 2 * s, 2600 * ms, 4600 * ms, 8600 * ms, 16600 * ms, 32600 * ms},
			giveUp:      64600 * ms,
		},
		{
			// Every repeat answered, and the 1 s, 3 s, 7 s schedule
			// and its 15 s end start over from the last.
			personality: "freebsd",
			repeats:     []time.Duration{2 * s, 2200 * ms},
			synacks:     []time.Duration{0, 1 * s, 2 * s, 2200 * ms, 3200 * ms, 5200 * ms, 9200 * ms},
			giveUp:      17200 * ms,
		},
		{
			personality: "gvisor",
			repeats:     []time.Duration{2 * s, 2200 * ms},
			synacks:     []time.Duration{0, 1 * s, 3 * s, 7 * s, 15 * s, 31 * s, 63 * s},
			giveUp:      127 * s,
			stackACKs:   true,
		},
	} {
		t.Run(tc.personality, func(t *testing.T) {
			clock := faketime.NewManualClock()
			n, srv, _ := pair(t, &NetworkConfig{Clock: clock})
			l := listen(t, srv, tc.personality, 5)
			peer := newRawPeer(t, n, serverAddr, "198.18.99.1", 40000, time.Time{})
			prober := newRawPeer(t, n, serverAddr, "198.18.99.2", 40001, time.Time{})
			peer.syn()
			peer.await(t, 1)
			var now time.Duration
			advance := func(to time.Duration) {
				clock.Advance(to - now)
				now = to
			}
			for _, at := range tc.repeats {
				advance(at)
				peer.repeatSYN()
				flushServer(t, prober)
			}
			advance(tc.giveUp - ms)
			if h := l.HalfOpen(); h != 1 {
				t.Fatalf("%v after the SYN, %d half-open; want 1 until %v", now, h, tc.giveUp)
			}
			advance(tc.giveUp)
			waitFor(t, "the half-open connection to be given up", func() bool { return l.HalfOpen() == 0 })

			var synacks []time.Duration
			acks := 0
			for _, h := range peer.heard() {
				switch {
				case h.flags == header.TCPFlagSyn|header.TCPFlagAck:
					synacks = append(synacks, h.at)
				case h.flags == header.TCPFlagAck && tc.stackACKs:
					acks++
				default:
					t.Errorf("the server sent %v at %v; want SYN-ACKs only", h.flags, h.at)
				}
			}
			if acks > len(tc.repeats) {
				t.Errorf("%d bare ACKs for %d repeated SYNs", acks, len(tc.repeats))
			}
			if !slices.Equal(synacks, tc.synacks) {
				t.Errorf("SYN-ACKs at %v; want %v", synacks, tc.synacks)
			}
			if st := l.Stats(); st.Expired != 1 {
				t.Errorf("Expired = %d; want 1", st.Expired)
			}
		})
	}
}
