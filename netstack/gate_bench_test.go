package netstack

import (
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

// BenchmarkGateInbound measures what the gate spends on an arriving packet
// it lets by: a data segment to a port no listener of this package has
// (port=other), and one to a listening port that holds no handshake
// (port=listening): an established connection's.
func BenchmarkGateInbound(b *testing.B) {
	_, srv, _ := pair(b, nil)
	listen(b, srv, "linux", 5)
	for _, tc := range []struct {
		name string
		port uint16
	}{{"port=other", 81}, {"port=listening", 80}} {
		b.Run(tc.name, func(b *testing.B) {
			t := tcpSpec{
				proto: ipv4.ProtocolNumber, src: ip4Addr("198.18.0.2"), dst: ip4Addr(serverAddr),
				sport: 40000, dport: tc.port, seq: 1, ack: 1, flags: header.TCPFlagAck | header.TCPFlagPsh,
				window: 65535, payload: make([]byte, 100),
			}
			pkt := newPacket(t.build())
			defer pkt.DecRef()
			g := srv.gate
			b.ReportAllocs()
			for b.Loop() {
				if !g.inbound(pkt) {
					b.Fatal("dropped")
				}
			}
		})
	}
}

func ip4Addr(s string) tcpip.Address { return tcpip.AddrFrom4Slice(ip4(s)) }
