package netstack

import (
	"context"
	"encoding/binary"
	"io"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
)

// FuzzInboundPacket delivers any bytes as a packet arriving at a host with a
// listener (linux, with SYN cookies after a small SYN queue) and an
// established connection: truncated headers, bad checksums, impossible
// flags, SYNs to closed ports, stray ACKs, forged cookies. Nothing may panic,
// the established connection must keep working, and a new client must still
// connect. Packets whose source parses as an address are moved into
// 198.19.0.0/16 first, so that no input is a legitimate segment of the
// connection under watch.
func FuzzInboundPacket(f *testing.F) {
	server := tcpip.AddrFrom4([4]byte{198, 18, 0, 1})
	src := tcpip.AddrFrom4([4]byte{198, 19, 0, 7})
	v6server := tcpip.AddrFrom16([16]byte{0xfd, 0xb1, 0x0a, 0xc6, 15: 1})
	v6src := tcpip.AddrFrom16([16]byte{0xfd, 0xb1, 0x0a, 0xc6, 14: 9, 15: 9})
	for _, flags := range []header.TCPFlags{header.TCPFlagSyn, header.TCPFlagAck, header.TCPFlagRst, header.TCPFlagSyn | header.TCPFlagAck,
		header.TCPFlagFin | header.TCPFlagAck, header.TCPFlagSyn | header.TCPFlagFin, header.TCPFlagSyn | header.TCPFlagRst, 0xff} {
		for _, port := range []uint16{80, 81} {
			b := tcpSpec{proto: ipv4.ProtocolNumber, src: src, dst: server, sport: 5000, dport: port, seq: 1, ack: 2, flags: flags, window: 100, mss: 1460}.build()
			f.Add(b)
			f.Add(b[:len(b)-7]) // truncated
			bad := append([]byte(nil), b...)
			bad[len(bad)-1] ^= 0xff // bad checksum
			f.Add(bad)
		}
	}
	f.Add(tcpSpec{proto: ipv6.ProtocolNumber, src: v6src, dst: v6server, sport: 5000, dport: 80, seq: 9, flags: header.TCPFlagSyn}.build())
	f.Add([]byte{0x45})
	f.Add([]byte{})

	n, srv, cli := pair(f, nil)
	l, err := srv.Listen(context.Background(), "tcp", ":80", &ListenConfig{Personality: backlog.MustLookup("linux"), Backlog: 2})
	if err != nil {
		f.Fatal(err)
	}
	defer l.Close()
	go echo(l)
	watched, err := cli.Dial(context.Background(), "tcp", serverAddr+":80")
	if err != nil {
		f.Fatal(err)
	}
	defer watched.Close()
	roundTrip := func(t *testing.T, c interface {
		io.ReadWriter
		SetDeadline(time.Time) error
	}) {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatalf("write: %v", err)
		}
		got := make([]byte, 4)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
			t.Fatalf("echo: %q, %v", got, err)
		}
	}

	f.Fuzz(func(t *testing.T, b []byte) {
		b = append([]byte(nil), b...)
		dst := server
		if len(b) >= header.IPv4MinimumSize && b[0]>>4 == 4 {
			copy(b[12:16], src.AsSlice())
			copy(b[16:20], server.AsSlice())
			if hl := int(b[0]&0xf) * 4; hl >= header.IPv4MinimumSize && hl <= len(b) {
				// Valid IP checksums, so that the stack looks further;
				// the TCP checksum too unless the input's TOS says no.
				binary.BigEndian.PutUint16(b[10:], 0)
				binary.BigEndian.PutUint16(b[10:], ^checksum.Checksum(b[:hl], 0))
				if tcp := b[hl:]; b[1]&1 == 0 && len(tcp) >= header.TCPMinimumSize && b[9] == uint8(header.TCPProtocolNumber) &&
					int(header.TCP(tcp).DataOffset()) <= len(tcp) {
					t := header.TCP(tcp)
					t.SetChecksum(0)
					t.SetChecksum(^t.CalculateChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, server, uint16(len(tcp)))))
				}
			}
		} else if len(b) >= header.IPv6MinimumSize && b[0]>>4 == 6 {
			copy(b[8:24], v6src.AsSlice())
			copy(b[24:40], v6server.AsSlice())
			dst = v6server
		}
		n.deliver(dst, b)
		roundTrip(t, watched)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := cli.Dial(ctx, "tcp", serverAddr+":80")
		if err != nil {
			t.Fatalf("a new client after the packet: %v", err)
		}
		roundTrip(t, c.(*Conn))
		c.(*Conn).Abort() // no TIME-WAIT to exhaust the client's ports
	})
}
