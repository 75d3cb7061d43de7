package netstack

// What the packet path knows of a 4-tuple without the gate's lock: whether
// the gate may hold a handshake for it, and whether its client reset it a
// moment ago.

import (
	"encoding/binary"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// tupleKey hashes the client's end of a connection and the local port:
// the address as four 32-bit words (an IPv4 address in the first, the rest
// zero), the client's port and the local port. Packets of one connection
// hash alike whether the key is read from their bytes (keyOfPacket) or
// from a parsed 4-tuple (keyOf).
func tupleKey(a0, a1, a2, a3 uint32, rport, lport uint16) uint32 {
	// Each field times an odd constant, a bijection, so that 4-tuples that
	// differ in one field differ before the mix; then murmur3's fmix32.
	h := a0*0x9e3779b1 ^ a1*0x85ebca6b ^ a2*0xc2b2ae35 ^ a3*0x27d4eb2f ^ (uint32(rport)<<16|uint32(lport))*0x165667b1
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	return h ^ h>>16
}

// keyOf is tupleKey of a 4-tuple as this host sees it.
func keyOf(id stack.TransportEndpointID) uint32 {
	if id.RemoteAddress.Len() == 4 {
		a := id.RemoteAddress.As4()
		return tupleKey(binary.BigEndian.Uint32(a[:]), 0, 0, 0, id.RemotePort, id.LocalPort)
	}
	a := id.RemoteAddress.As16()
	return tupleKey(binary.BigEndian.Uint32(a[0:]), binary.BigEndian.Uint32(a[4:]),
		binary.BigEndian.Uint32(a[8:]), binary.BigEndian.Uint32(a[12:]), id.RemotePort, id.LocalPort)
}

// keyOfPacket is tupleKey of an arriving packet that peekTCP read, from
// its bytes: the source is the client.
func keyOfPacket(b []byte) uint32 {
	if b[0]>>4 == 4 {
		l4 := b[int(b[0]&0xf)*4:]
		return tupleKey(binary.BigEndian.Uint32(b[12:]), 0, 0, 0,
			binary.BigEndian.Uint16(l4[0:]), binary.BigEndian.Uint16(l4[2:]))
	}
	l4 := b[40:]
	return tupleKey(binary.BigEndian.Uint32(b[8:]), binary.BigEndian.Uint32(b[12:]),
		binary.BigEndian.Uint32(b[16:]), binary.BigEndian.Uint32(b[20:]),
		binary.BigEndian.Uint16(l4[0:]), binary.BigEndian.Uint16(l4[2:]))
}

// heldSlots is the size of the gate's filter of held 4-tuples.
const heldSlots = 1024

// mayHold reports whether the gate may hold a connection of key's: false
// means it holds none, and a segment of it, other than a SYN, is a live
// connection's or a cookie's. The filter counts the held connections by
// key (holdLocked, unholdLocked); it is read without the gate's lock. A
// connection is counted before the SYN-ACK that any segment of its can
// answer leaves, so a segment never misses its own connection.
func (g *gate) mayHold(key uint32) bool { return g.heldByKey[key%heldSlots].Load() != 0 }

// resetSlots is how many of the latest client resets the gate remembers.
const resetSlots = 512

// resetRing remembers the latest resetSlots resets of connections the gate
// does not hold, by their clients, so that a SYN for the same 4-tuple
// right behind such a reset waits for the stack to have processed it
// (holdSYNLocked). The race it serves lasts as long as the stack's
// processor takes to handle the reset, microseconds to milliseconds; at
// 20,000 resets a second the ring remembers one for 25 ms, and each for a
// second at most. It takes no lock: a slot is one word, the key of the
// 4-tuple and when, in milliseconds of the stack's clock; a SYN that
// matches only by its key (one chance in 2^32) waits for nothing longer
// than synRetryFor.
type resetRing struct {
	next  atomic.Uint32
	slots [resetSlots]atomic.Uint64
}

// stamp is a moment as a slot holds it: 31 bits of milliseconds, and a bit
// that says the slot is in use.
func stamp(now tcpip.MonotonicTime) uint32 {
	return uint32(now.Sub(tcpip.MonotonicTime{}).Milliseconds())&(1<<31-1) | 1<<31
}

// note remembers a reset of key's connection, at now.
func (r *resetRing) note(key uint32, now tcpip.MonotonicTime) {
	i := r.next.Add(1) % resetSlots
	r.slots[i].Store(uint64(key)<<32 | uint64(stamp(now)))
}

// take reports whether key's connection was reset in the last second, and
// forgets that it was.
func (r *resetRing) take(key uint32, now tcpip.MonotonicTime) bool {
	t := stamp(now)
	for i := range r.slots {
		v := r.slots[i].Load()
		if uint32(v>>32) != key || uint32(v)&(1<<31) == 0 {
			continue
		}
		age := (t - uint32(v)) & (1<<31 - 1)
		if age <= uint32(time.Second/time.Millisecond) && r.slots[i].CompareAndSwap(v, 0) {
			return true
		}
	}
	return false
}

// connTable is the gate's index of the connections it holds, by 4-tuple:
// open addressing by tupleKey with linear probing, a slot being a pointer.
// A Go map of TransportEndpointID would hash the whole 64-byte key on
// every packet and keep it beside each entry; this keeps 16 bytes an entry
// at most and compares a 4-tuple only where the key matches. Guarded by
// gate.mu.
type connTable struct {
	slots []*pending // a power of two long; nil is free
	n     int
}

// connTableMin is the fewest slots a table that holds anything has.
const connTableMin = 16

// get returns the connection held for id, whose tupleKey is key, or nil.
func (t *connTable) get(key uint32, id stack.TransportEndpointID) *pending {
	if t.n == 0 {
		return nil
	}
	mask := uint32(len(t.slots) - 1)
	for i := key & mask; ; i = (i + 1) & mask {
		e := t.slots[i]
		if e == nil {
			return nil
		}
		if e.key == key && e.id == id {
			return e
		}
	}
}

// put adds e, which must not be there; the table is at most half full.
func (t *connTable) put(e *pending) {
	if 2*(t.n+1) > len(t.slots) {
		t.resize(max(connTableMin, 2*len(t.slots)))
	}
	t.insert(e)
	t.n++
}

func (t *connTable) insert(e *pending) {
	mask := uint32(len(t.slots) - 1)
	i := e.key & mask
	for t.slots[i] != nil {
		i = (i + 1) & mask
	}
	t.slots[i] = e
}

// remove takes e out, if it is there, and reports whether it was. An
// emptied table that had grown past shrinkAbove entries starts small again.
func (t *connTable) remove(e *pending) bool {
	if t.n == 0 {
		return false
	}
	mask := uint32(len(t.slots) - 1)
	i := e.key & mask
	for t.slots[i] != e {
		if t.slots[i] == nil {
			return false
		}
		i = (i + 1) & mask
	}
	// Close the gap: move back each entry after it whose probe passed
	// through the freed slot (Knuth's algorithm R).
	for j := (i + 1) & mask; t.slots[j] != nil; j = (j + 1) & mask {
		home := t.slots[j].key & mask
		if (j-home)&mask >= (j-i)&mask {
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = nil
	t.n--
	if t.n == 0 && len(t.slots) > 2*shrinkAbove {
		t.slots = nil
	}
	return true
}

func (t *connTable) resize(n int) {
	old := t.slots
	t.slots = make([]*pending, n)
	for _, e := range old {
		if e != nil {
			t.insert(e)
		}
	}
}

// all calls f for every connection held; f must not change the table.
func (t *connTable) all(f func(*pending)) {
	for _, e := range t.slots {
		if e != nil {
			f(e)
		}
	}
}
