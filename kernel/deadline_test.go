package kernel

import (
	"testing"
	"time"
)

// TestDeadline checks the deadline used by Accept while it backs off or
// waits on an emulated queue: it fires at the time set, moving it later
// keeps a waiter waiting, moving it into the past wakes the waiter, and a
// cleared deadline never fires.
func TestDeadline(t *testing.T) {
	var d deadline
	fired := func(c <-chan struct{}, within time.Duration) bool {
		select {
		case <-c:
			return true
		case <-time.After(within):
			return false
		}
	}
	if fired(d.wait(), 20*time.Millisecond) {
		t.Fatal("a deadline never set fired")
	}

	d.set(time.Now().Add(30 * time.Millisecond))
	c := d.wait()
	if fired(c, 10*time.Millisecond) {
		t.Fatal("fired 20ms early")
	}
	if !fired(c, time.Second) {
		t.Fatal("did not fire")
	}

	d.set(time.Now().Add(30 * time.Millisecond))
	c = d.wait()
	d.set(time.Now().Add(time.Hour))
	if fired(c, 80*time.Millisecond) {
		t.Fatal("fired at the old time after being moved an hour later")
	}
	if c2 := d.wait(); c2 != c {
		t.Fatal("moving an unexpired deadline replaced the channel a waiter holds")
	}
	d.set(time.Now().Add(-time.Second))
	if !fired(c, 10*time.Millisecond) {
		t.Fatal("moving the deadline into the past did not wake the waiter")
	}

	d.set(time.Time{})
	if fired(d.wait(), 20*time.Millisecond) {
		t.Fatal("a cleared deadline fired")
	}
}

// TestNextDelay checks the descriptor-exhaustion back-off: 5 ms, doubling,
// never above 1 s.
func TestNextDelay(t *testing.T) {
	var got []time.Duration
	d := time.Duration(0)
	for range 10 {
		d = nextDelay(d)
		got = append(got, d)
	}
	want := []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("back-off %v; want %v ms", got, want)
		}
	}
}
