package netstack

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// seg is what the gate reads from one TCP/IP packet: its connection, as
// seen from this host (Local is this host's end), and the TCP fields that
// decide its fate.
type seg struct {
	proto  tcpip.NetworkProtocolNumber
	id     stack.TransportEndpointID
	flags  header.TCPFlags
	seq    uint32
	ack    uint32
	window uint16
	// payload is the number of TCP payload bytes.
	payload int
	// syn is the options of a SYN: MSS (536 if absent), window scale (-1
	// if absent), SACK-permitted and timestamps.
	syn header.TCPSynOptions
	// tcp is the TCP header and payload, aliasing the packet, so that
	// the gate can rewrite sequence numbers in place. For a packet
	// leaving (parseOutbound) it is the header alone, and ip the IP
	// header.
	tcp header.TCP
	ip  []byte
	// valid is set once checksumValid has found both checksums right.
	valid bool
}

// parse reads an IPv4 or IPv6 packet carrying TCP. inbound says whether the
// packet arrives at this host (its destination is local) or leaves it. It
// reports false for anything else, for fragments, and for truncated or
// malformed headers: such packets are left to the stack, which drops them.
func parse(b []byte, inbound bool) (s seg, ok bool) {
	proto, src, dst, hl, total, ok := parseIP(b)
	if !ok {
		return s, false
	}
	s, ok = parseTCP(proto, src, dst, b[hl:total], inbound)
	s.ip = b[:hl]
	return s, ok
}

// parseIP reads an IP header: the protocol, the addresses, and where the
// transport header starts and the packet ends. Only unfragmented TCP is
// reported.
func parseIP(b []byte) (proto tcpip.NetworkProtocolNumber, src, dst tcpip.Address, hl, total int, ok bool) {
	if len(b) < 1 {
		return
	}
	switch b[0] >> 4 {
	case 4:
		ip := header.IPv4(b)
		if !ip.IsValid(len(b)) || ip.Protocol() != uint8(header.TCPProtocolNumber) || ip.More() || ip.FragmentOffset() != 0 {
			return
		}
		hl, total = int(ip.HeaderLength()), int(ip.TotalLength())
		if total > len(b) || hl > total {
			return
		}
		return ipv4.ProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), hl, total, true
	case 6:
		ip := header.IPv6(b)
		if !ip.IsValid(len(b)) || ip.TransportProtocol() != header.TCPProtocolNumber {
			return
		}
		total = header.IPv6MinimumSize + int(ip.PayloadLength())
		if total > len(b) {
			return
		}
		return ipv6.ProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), header.IPv6MinimumSize, total, true
	}
	return
}

// parseTCP reads a TCP segment, l4 being its header and payload.
func parseTCP(proto tcpip.NetworkProtocolNumber, src, dst tcpip.Address, l4 []byte, inbound bool) (s seg, ok bool) {
	if len(l4) < header.TCPMinimumSize {
		return s, false
	}
	t := header.TCP(l4)
	off := int(t.DataOffset())
	if off < header.TCPMinimumSize || off > len(l4) {
		return s, false
	}
	s.proto = proto
	s.tcp = t
	s.flags = t.Flags()
	s.seq, s.ack, s.window = t.SequenceNumber(), t.AckNumber(), t.WindowSize()
	s.payload = len(l4) - off
	if s.flags.Contains(header.TCPFlagSyn) {
		s.syn = header.ParseSynOptions(t.Options(), s.flags.Contains(header.TCPFlagAck))
	}
	if inbound {
		s.id = stack.TransportEndpointID{LocalPort: t.DestinationPort(), LocalAddress: dst, RemotePort: t.SourcePort(), RemoteAddress: src}
	} else {
		s.id = stack.TransportEndpointID{LocalPort: t.SourcePort(), LocalAddress: src, RemotePort: t.DestinationPort(), RemoteAddress: dst}
	}
	return s, true
}

// parseOutbound reads a packet the stack is sending, from its header views:
// the TCP header in s aliases the packet's own, so rewrites change what is
// sent. The checksum cannot be validated from s (its payload is elsewhere),
// and need not be: the stack just computed it.
func parseOutbound(pkt *stack.PacketBuffer) (s seg, ok bool) {
	nh, th := pkt.NetworkHeader().Slice(), pkt.TransportHeader().Slice()
	if len(nh) == 0 || len(th) < header.TCPMinimumSize || pkt.TransportProtocolNumber != header.TCPProtocolNumber {
		return s, false
	}
	var src, dst tcpip.Address
	switch pkt.NetworkProtocolNumber {
	case ipv4.ProtocolNumber:
		if len(nh) < header.IPv4MinimumSize {
			return s, false
		}
		src, dst = header.IPv4(nh).SourceAddress(), header.IPv4(nh).DestinationAddress()
	case ipv6.ProtocolNumber:
		if len(nh) < header.IPv6MinimumSize {
			return s, false
		}
		src, dst = header.IPv6(nh).SourceAddress(), header.IPv6(nh).DestinationAddress()
	default:
		return s, false
	}
	s, ok = parseTCP(pkt.NetworkProtocolNumber, src, dst, th, false)
	s.payload = pkt.Data().Size()
	s.ip = nh
	return s, ok
}

// checksumValid reports whether the checksums of s, an arriving segment,
// are right: the TCP checksum and, over IPv4, the header's. Only a
// decision asks: the pseudo-header is summed then, not for every packet.
// When both are right, the stack need not check them again (see
// gate.inbound).
func (s *seg) checksumValid() bool {
	if s.proto == ipv4.ProtocolNumber && !header.IPv4(s.ip).IsChecksumValid() {
		return false
	}
	src, dst := s.id.RemoteAddress, s.id.LocalAddress // s arrived: Local is the destination
	pseudo := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(s.tcp)))
	s.valid = s.tcp.CalculateChecksum(checksum.Checksum(s.tcp[s.tcp.DataOffset():], pseudo)) == 0xffff
	return s.valid
}

// peekTCP reads, without parsing anything else, the destination port and
// the flags of an unfragmented IPv4 or IPv6 packet carrying TCP: all the
// gate needs to know that a packet is none of its business.
func peekTCP(b []byte) (dport uint16, flags header.TCPFlags, ok bool) {
	if len(b) < header.IPv4MinimumSize {
		return 0, 0, false
	}
	var l4 []byte
	switch b[0] >> 4 {
	case 4:
		hl := int(b[0]&0xf) * 4
		if b[9] != uint8(header.TCPProtocolNumber) || binary.BigEndian.Uint16(b[6:])&0x3fff != 0 || len(b) < hl+header.TCPMinimumSize {
			return 0, 0, false // not TCP, or a fragment: parse decides
		}
		l4 = b[hl:]
	case 6:
		if len(b) < header.IPv6MinimumSize+header.TCPMinimumSize || b[6] != uint8(header.TCPProtocolNumber) {
			return 0, 0, false
		}
		l4 = b[header.IPv6MinimumSize:]
	default:
		return 0, 0, false
	}
	return binary.BigEndian.Uint16(l4[2:]), header.TCPFlags(l4[13]), true
}

// seqLen is the sequence space s takes: its payload, plus one each for SYN
// and FIN.
func (s *seg) seqLen() uint32 {
	n := uint32(s.payload)
	if s.flags.Contains(header.TCPFlagSyn) {
		n++
	}
	if s.flags.Contains(header.TCPFlagFin) {
		n++
	}
	return n
}

// rewriteSeq sets the sequence number of s in place, updating the checksum
// incrementally (RFC 1624).
func (s *seg) rewriteSeq(v uint32) {
	old := s.tcp.SequenceNumber()
	s.tcp.SetSequenceNumber(v)
	s.tcp.SetChecksum(updateChecksum32(s.tcp.Checksum(), old, v))
}

// rewriteAck sets the acknowledgment number of s in place, updating the
// checksum incrementally.
func (s *seg) rewriteAck(v uint32) {
	old := s.tcp.AckNumber()
	s.tcp.SetAckNumber(v)
	s.tcp.SetChecksum(updateChecksum32(s.tcp.Checksum(), old, v))
}

// updateChecksum32 returns the Internet checksum sum after a 32-bit field
// changes from old to new: HC' = ~(~HC + ~m + m') per RFC 1624, applied to
// both 16-bit halves.
func updateChecksum32(sum uint16, old, new uint32) uint16 {
	x := ^sum
	x = checksum.Combine(x, ^uint16(old>>16))
	x = checksum.Combine(x, ^uint16(old))
	x = checksum.Combine(x, uint16(new>>16))
	x = checksum.Combine(x, uint16(new))
	return ^x
}

// tcpSpec describes a segment the gate writes itself.
type tcpSpec struct {
	proto    tcpip.NetworkProtocolNumber
	src, dst tcpip.Address
	sport    uint16
	dport    uint16
	seq, ack uint32
	flags    header.TCPFlags
	window   uint16
	mss      uint16 // an MSS option when not zero
	wsOK     bool   // a window-scale option (SYNs only) with shift ws
	ws       int
	sackPerm bool // a SACK-permitted option
	ts       bool // a timestamps option with tsval and tsecr
	tsval    uint32
	tsecr    uint32
	payload  []byte
}

// optionsLen returns the length of the options t carries, padded to a
// multiple of four.
func (t *tcpSpec) optionsLen() int {
	n := 0
	if t.mss != 0 {
		n += header.TCPOptionMSSLength
	}
	if t.wsOK {
		n += 1 + header.TCPOptionWSLength // NOP, WS
	}
	if t.sackPerm {
		n += 2 + header.TCPOptionSackPermittedLength // NOP NOP, SACK-permitted
	}
	if t.ts {
		n += 2 + header.TCPOptionTSLength // NOP NOP, TS
	}
	return n
}

// build returns the bytes of an IPv4 or IPv6 packet carrying the segment.
func (t tcpSpec) build() []byte {
	if !t.flags.Contains(header.TCPFlagSyn) {
		t.wsOK = false // window scale is a SYN's option only (RFC 7323)
	}
	optLen := t.optionsLen()
	hdrLen := header.TCPMinimumSize + optLen
	tcpLen := hdrLen + len(t.payload)
	ipLen := header.IPv4MinimumSize
	if t.proto == ipv6.ProtocolNumber {
		ipLen = header.IPv6MinimumSize
	}
	b := make([]byte, ipLen+tcpLen)
	if t.proto == ipv6.ProtocolNumber {
		header.IPv6(b).Encode(&header.IPv6Fields{
			PayloadLength:     uint16(tcpLen),
			TransportProtocol: header.TCPProtocolNumber,
			HopLimit:          64,
			SrcAddr:           t.src,
			DstAddr:           t.dst,
		})
	} else {
		ip := header.IPv4(b)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(len(b)),
			TTL:         64,
			Protocol:    uint8(header.TCPProtocolNumber),
			SrcAddr:     t.src,
			DstAddr:     t.dst,
		})
		ip.SetChecksum(^ip.CalculateChecksum())
	}
	tcp := header.TCP(b[ipLen:])
	tcp.Encode(&header.TCPFields{
		SrcPort:    t.sport,
		DstPort:    t.dport,
		SeqNum:     t.seq,
		AckNum:     t.ack,
		DataOffset: uint8(hdrLen),
		Flags:      t.flags,
		WindowSize: t.window,
	})
	o := tcp[header.TCPMinimumSize:]
	if t.mss != 0 {
		o = o[header.EncodeMSSOption(uint32(t.mss), o):]
	}
	if t.wsOK {
		o = o[header.EncodeNOP(o):]
		o = o[header.EncodeWSOption(t.ws, o):]
	}
	if t.sackPerm {
		o = o[header.EncodeNOP(o):]
		o = o[header.EncodeNOP(o):]
		o = o[header.EncodeSACKPermittedOption(o):]
	}
	if t.ts {
		o = o[header.EncodeNOP(o):]
		o = o[header.EncodeNOP(o):]
		header.EncodeTSOption(t.tsval, t.tsecr, o)
	}
	copy(tcp[hdrLen:], t.payload)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, t.src, t.dst, uint16(tcpLen))
	xsum = checksum.Checksum(t.payload, xsum)
	tcp.SetChecksum(^tcp.CalculateChecksum(xsum))
	return b
}

// option finds the first TCP option of the given kind in s and returns its
// offset in s.tcp, or -1.
func (s *seg) option(kind byte) int {
	opts := s.tcp[header.TCPMinimumSize:s.tcp.DataOffset()]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case header.TCPOptionEOL:
			return -1
		case header.TCPOptionNOP:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return -1
		}
		if opts[i] == kind {
			return header.TCPMinimumSize + i
		}
		i += int(opts[i+1])
	}
	return -1
}

// timestamps returns the timestamps option of s, if it has one.
func (s *seg) timestamps() (tsval, tsecr uint32, ok bool) {
	off := s.option(header.TCPOptionTS)
	if off < 0 || s.tcp[off+1] != header.TCPOptionTSLength {
		return 0, 0, false
	}
	return binary.BigEndian.Uint32(s.tcp[off+2:]), binary.BigEndian.Uint32(s.tcp[off+6:]), true
}

// addTimestamps adds dval to the tsval and decr to the tsecr of s's
// timestamps option, if it has one, in place.
func (s *seg) addTimestamps(dval, decr uint32) {
	off := s.option(header.TCPOptionTS)
	if off < 0 || s.tcp[off+1] != header.TCPOptionTSLength {
		return
	}
	if dval != 0 {
		s.set32(off+2, binary.BigEndian.Uint32(s.tcp[off+2:])+dval)
	}
	if decr != 0 {
		s.set32(off+6, binary.BigEndian.Uint32(s.tcp[off+6:])+decr)
	}
}

// addSACK adds d to both edges of every SACK block of s, in place.
func (s *seg) addSACK(d uint32) {
	off := s.option(header.TCPOptionSACK)
	if off < 0 {
		return
	}
	n := int(s.tcp[off+1])
	for i := off + 2; i+8 <= off+n; i += 8 {
		s.set32(i, binary.BigEndian.Uint32(s.tcp[i:])+d)
		s.set32(i+4, binary.BigEndian.Uint32(s.tcp[i+4:])+d)
	}
}

// setWindow sets the window field of s in place.
func (s *seg) setWindow(w uint16) {
	old := s.tcp.WindowSize()
	s.tcp.SetWindowSize(w)
	s.tcp.SetChecksum(^checksum.Combine(checksum.Combine(^s.tcp.Checksum(), ^old), w))
}

// set32 writes v at offset off of s.tcp and updates the checksum: for
// each 16-bit word of the header that changes, ~(~HC + ~m + m') (RFC
// 1624), whether or not off is even.
func (s *seg) set32(off int, v uint32) {
	lo, hi := off&^1, (off+4+1)&^1
	var before [6]byte
	n := copy(before[:], s.tcp[lo:hi])
	binary.BigEndian.PutUint32(s.tcp[off:], v)
	x := ^s.tcp.Checksum()
	for i := 0; i < n; i += 2 {
		x = checksum.Combine(x, ^binary.BigEndian.Uint16(before[i:]))
		x = checksum.Combine(x, binary.BigEndian.Uint16(s.tcp[lo+i:]))
	}
	s.tcp.SetChecksum(^x)
}

// resetFor returns the RST a TCP sends in answer to s (RFC 9293 section
// 3.10.7.1): with the acknowledgment s carries as its sequence number if s
// has ACK set, otherwise with sequence 0 acknowledging all of s.
func resetFor(s *seg) tcpSpec {
	r := tcpSpec{
		proto: s.proto,
		src:   s.id.LocalAddress, dst: s.id.RemoteAddress,
		sport: s.id.LocalPort, dport: s.id.RemotePort,
	}
	if s.flags.Contains(header.TCPFlagAck) {
		r.seq = s.ack
		r.flags = header.TCPFlagRst
	} else {
		r.ack = s.seq + s.seqLen()
		r.flags = header.TCPFlagRst | header.TCPFlagAck
	}
	return r
}

// newPacket wraps bytes in a packet buffer the stack can take.
func newPacket(b []byte) *stack.PacketBuffer {
	return stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
}

// protoOf returns the network protocol of an IP packet's bytes.
func protoOf(b []byte) tcpip.NetworkProtocolNumber {
	if len(b) > 0 && b[0]>>4 == 6 {
		return ipv6.ProtocolNumber
	}
	return ipv4.ProtocolNumber
}
