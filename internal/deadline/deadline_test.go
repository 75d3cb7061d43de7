package deadline

import (
	"testing"
	"time"
)

// TestDeadline checks the deadline both transports' Accept waits on: it
// fires at the time set, moving it later keeps a waiter waiting, moving it
// into the past wakes the waiter, and a cleared deadline never fires.
func TestDeadline(t *testing.T) {
	var d Deadline
	fired := func(c <-chan struct{}, within time.Duration) bool {
		select {
		case <-c:
			return true
		case <-time.After(within):
			return false
		}
	}
	if fired(d.Done(), 20*time.Millisecond) {
		t.Fatal("a deadline never set fired")
	}

	d.Set(time.Now().Add(30 * time.Millisecond))
	c := d.Done()
	if fired(c, 10*time.Millisecond) {
		t.Fatal("fired 20ms early")
	}
	if !fired(c, time.Second) {
		t.Fatal("did not fire")
	}

	d.Set(time.Now().Add(30 * time.Millisecond))
	c = d.Done()
	d.Set(time.Now().Add(time.Hour))
	if fired(c, 80*time.Millisecond) {
		t.Fatal("fired at the old time after being moved an hour later")
	}
	if c2 := d.Done(); c2 != c {
		t.Fatal("moving an unexpired deadline replaced the channel a waiter holds")
	}
	d.Set(time.Now().Add(-time.Second))
	if !fired(c, 10*time.Millisecond) {
		t.Fatal("moving the deadline into the past did not wake the waiter")
	}

	d.Set(time.Time{})
	if fired(d.Done(), 20*time.Millisecond) {
		t.Fatal("a cleared deadline fired")
	}
}
