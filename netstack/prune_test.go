package netstack

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/faketime"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestOldHalfOpenPruned: Linux's request timer gives old half-open
// connections fewer SYN-ACKs while more than half of max(8, backlog) wait
// (reqsk_timer_handler). Under a virtual clock, clients that never send
// their final ACK meet a linux listener with backlog 8. Four of them never
// pass the half mark and get every SYN-ACK of the schedule (0, 1, 3, 7, 15
// and 31 s, given up at 63 s). Six do: none is young after its first
// retransmission, so at 7 s the retries are down to 2 and the connections
// whose timers fire first are given up, each leaving one fewer, until 4
// are left, which are below the mark again and go on to the end.
func TestOldHalfOpenPruned(t *testing.T) {
	for _, tc := range []struct {
		clients int
		synacks map[time.Duration]int // SYN-ACKs sent at each moment
		expired map[time.Duration]int // connections given up by then
	}{
		{
			clients: 4,
			synacks: map[time.Duration]int{0: 4, 1 * time.Second: 4, 3 * time.Second: 4, 7 * time.Second: 4, 15 * time.Second: 4, 31 * time.Second: 4},
			expired: map[time.Duration]int{62 * time.Second: 0, 63 * time.Second: 4},
		},
		{
			clients: 6,
			synacks: map[time.Duration]int{0: 6, 1 * time.Second: 6, 3 * time.Second: 6, 7 * time.Second: 4, 15 * time.Second: 4, 31 * time.Second: 4},
			expired: map[time.Duration]int{6 * time.Second: 0, 7 * time.Second: 2, 62 * time.Second: 2, 63 * time.Second: 6},
		},
	} {
		t.Run(fmt.Sprintf("clients=%d", tc.clients), func(t *testing.T) {
			clock := faketime.NewManualClock()
			n, srv, _ := pair(t, &NetworkConfig{Clock: clock})
			l := listen(t, srv, "linux", 8)
			var peers []*rawPeer
			for i := range tc.clients {
				p := newRawPeer(t, n, serverAddr, "198.18.99.1", 40000+uint16(i), time.Time{})
				p.syn()
				p.await(t, 1)
				peers = append(peers, p)
			}
			var now time.Duration
			var checks []time.Duration
			for at := range tc.expired {
				checks = append(checks, at)
			}
			slices.Sort(checks)
			for _, at := range checks {
				clock.Advance(at - now)
				now = at
				if got := l.Stats().Expired; got != uint64(tc.expired[at]) {
					t.Errorf("%v after the SYNs, %d given up; want %d", at, got, tc.expired[at])
				}
			}
			got := map[time.Duration]int{}
			for _, p := range peers {
				for _, h := range p.heard() {
					if h.flags != header.TCPFlagSyn|header.TCPFlagAck {
						t.Errorf("client %d heard %v at %v", p.port, h.flags, h.at)
					}
					got[h.at]++
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.synacks) {
				t.Errorf("SYN-ACKs by moment %v; want %v", got, tc.synacks)
			}
			if h := l.HalfOpen(); h != 0 {
				t.Errorf("%d half-open at the end; want 0", h)
			}
		})
	}
}
