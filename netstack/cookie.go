package netstack

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// SYN cookies, in the layout Linux uses (net/ipv4/syncookies.c): the
// server's initial sequence number carries a keyed hash of the connection,
// the client's own initial sequence number, a coarse clock in the top 8 bits,
// and an index into a small table of MSS values in the low 24 bits mixed with
// a second hash. A valid final ACK proves the client received the SYN-ACK, so
// the connection can be rebuilt from the ACK alone and nothing is kept for a
// SYN answered this way.
//
// The hashes are SHA-256 over a per-gate random secret, the 4-tuple and the
// clock, so cookies cannot be forged without the secret.

// cookieTick is the period of the cookie clock; a cookie stays valid for
// cookieMaxAge ticks (Linux: 64 s and 2 ticks, net/ipv4/syncookies.c
// MAX_SYNCOOKIE_AGE).
const (
	cookieTick   = 64 * time.Second
	cookieMaxAge = 2
)

// cookieMSS is the table of MSS values a cookie can carry, smallest first
// (the values of Linux's msstab for IPv4 and IPv6 together).
var cookieMSS = [...]uint16{536, 1220, 1440, 1460}

type cookieJar struct {
	secret [32]byte
}

func newCookieJar() *cookieJar {
	j := new(cookieJar)
	if _, err := rand.Read(j.secret[:]); err != nil {
		panic("netstack: no randomness for SYN cookies: " + err.Error())
	}
	return j
}

// hash returns 32 bits of a keyed hash of the connection, the salt and the
// clock count.
func (j *cookieJar) hash(id stack.TransportEndpointID, salt byte, count uint32) uint32 {
	var b [32 + 16 + 16 + 2 + 2 + 1 + 4]byte
	n := copy(b[:], j.secret[:])
	n += copy(b[n:], id.LocalAddress.AsSlice())
	n += copy(b[n:], id.RemoteAddress.AsSlice())
	binary.BigEndian.PutUint16(b[n:], id.LocalPort)
	binary.BigEndian.PutUint16(b[n+2:], id.RemotePort)
	b[n+4] = salt
	binary.BigEndian.PutUint32(b[n+5:], count)
	sum := sha256.Sum256(b[:n+9])
	return binary.BigEndian.Uint32(sum[:4])
}

func tickOf(now time.Time) uint32 {
	return uint32(now.Unix() / int64(cookieTick/time.Second))
}

// mssIndex returns the index of the largest table MSS not above mss.
func mssIndex(mss uint16) uint32 {
	i := 0
	for i+1 < len(cookieMSS) && cookieMSS[i+1] <= mss {
		i++
	}
	return uint32(i)
}

// make returns the server ISN for a SYN with client ISN isn and MSS option
// mss (0 if absent: 536, the RFC 9293 default).
func (j *cookieJar) make(id stack.TransportEndpointID, isn uint32, mss uint16, now time.Time) uint32 {
	if mss == 0 {
		mss = 536
	}
	count := tickOf(now)
	return j.hash(id, 0, 0) + isn + count<<24 + (j.hash(id, 1, count)+mssIndex(mss))&0xffffff
}

// check validates the final ACK of a cookie handshake: isn is the client's
// ISN (the ACK's sequence number minus one), cookie the server's (its
// acknowledgment minus one). It returns the MSS the cookie carries.
func (j *cookieJar) check(id stack.TransportEndpointID, isn, cookie uint32, now time.Time) (mss uint16, ok bool) {
	v := cookie - j.hash(id, 0, 0) - isn
	count := v >> 24
	age := (tickOf(now) - count) & 0xff
	if age > cookieMaxAge {
		return 0, false
	}
	// count has only 8 bits; rebuild the full counter from now.
	full := tickOf(now) - age
	idx := (v - j.hash(id, 1, full)) & 0xffffff
	if idx >= uint32(len(cookieMSS)) {
		return 0, false
	}
	return cookieMSS[idx], true
}

// With timestamps, a cookie also carries the client's other SYN options, in
// the low bits of the timestamp the SYN-ACK sends (its tsval), which the
// client's ACK echoes as tsecr: the client's window scale in the low four
// bits (all ones for none), SACK-permitted in the fifth, ECN in the sixth
// (net/ipv4/syncookies.c cookie_init_timestamp and
// cookie_timestamp_decode). Without timestamps only the MSS survives, as on
// Linux. gVisor negotiates no ECN, so that bit stays clear.
const (
	tsOptionBits = 6
	tsNoWS       = 0xf
	tsSACK       = 1 << 4
)

// cookieTimestamp returns the tsval of a cookie SYN-ACK at a TCP clock of
// now (milliseconds), carrying the client's window scale ws (negative for
// none) and SACK-permitted: now with its low bits replaced, and never
// ahead of it.
func cookieTimestamp(now uint32, ws int, sack bool) uint32 {
	opts := uint32(tsNoWS)
	if ws >= 0 {
		opts = uint32(min(ws, header.MaxWndScale))
	}
	if sack {
		opts |= tsSACK
	}
	ts := now&^(1<<tsOptionBits-1) | opts
	if ts > now {
		ts -= 1 << tsOptionBits
	}
	return ts
}

// cookieOptions reads what cookieTimestamp wrote back from the tsecr of
// the client's ACK: its window scale (-1 for none) and SACK-permitted.
func cookieOptions(tsecr uint32) (ws int, sack bool) {
	ws = int(tsecr & tsNoWS)
	if ws == tsNoWS {
		ws = -1
	}
	return ws, tsecr&tsSACK != 0
}
