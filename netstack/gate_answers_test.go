package netstack

import (
	"testing"
	"unsafe"

	"github.com/backlog-dev/backlog/internal/ring"
)

// TestAnswersPastDelivered: a SYN the stack has not answered yet holds
// back the gate's own replies to the SYNs decided after it; once it is
// answered they go, in order, past a connection that meanwhile completed
// and was delivered, whose handshake is gone. (That one's handshake was
// once read there, and a SYN gVisor dropped under load made the gate
// panic.)
func TestAnswersPastDelivered(t *testing.T) {
	g := &gate{}
	l := &Listener{answers: ring.Ring[answer]{Keep: ringKeep}}
	first := &pending{handshake: &handshake{l: l, st: stateHalfOpen}}
	second := &pending{handshake: &handshake{l: l, st: stateHalfOpen}}
	l.answers.Push(answer{e: first})
	l.answers.Push(answer{e: second})
	l.answers.Push(answer{b: []byte("cookie")})

	var fx effects
	g.answeredLocked(second, &fx) // its SYN-ACK left before first's
	second.handshake = nil        // delivered: the gate drops its handshake
	if len(fx.out) != 0 || l.answers.Len() != 3 {
		t.Fatalf("with the first SYN unanswered: %d replies sent, %d waiting; want 0 and 3", len(fx.out), l.answers.Len())
	}
	g.answeredLocked(first, &fx)
	if len(fx.out) != 1 || string(fx.out[0]) != "cookie" {
		t.Errorf("after the first SYN's answer, sent %q; want the cookie", fx.out)
	}
	if l.answers.Len() != 0 {
		t.Errorf("%d answers still waiting; want none", l.answers.Len())
	}
	if !second.isAnswered() {
		t.Error("a delivered connection reads as unanswered")
	}
}

// TestHandshakeSize: what the gate keeps per connection stays within the
// size classes BENCHMARKS.md counts: 144 bytes of handshake for a
// half-open connection, 32 bytes for one that waits for accept().
func TestHandshakeSize(t *testing.T) {
	if n := unsafe.Sizeof(handshake{}); n > 144 {
		t.Errorf("a handshake takes %d bytes; want at most 144", n)
	}
	if n := unsafe.Sizeof(pending{}); n > 32 {
		t.Errorf("a pending connection takes %d bytes; want at most 32", n)
	}
}
