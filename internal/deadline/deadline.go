// Package deadline is the accept deadline both transports share: a settable
// point in time, observed as a channel that is closed once it has passed.
package deadline

import (
	"sync"
	"time"
)

// Deadline is a settable point in time. Setting a new time before the old
// one passes keeps the channel, so a waiter holding it sees the new time;
// moving it into the past wakes every waiter. The zero value has no
// deadline.
type Deadline struct {
	mu      sync.Mutex
	expired chan struct{}
	timer   *time.Timer
	gen     uint64 // bumped by Set, so a stale timer does nothing
}

// Set moves the deadline to t; the zero time removes it.
func (d *Deadline) Set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	d.stopLocked()
	if d.expired == nil || closed(d.expired) {
		d.expired = make(chan struct{})
	}
	if t.IsZero() {
		return
	}
	wait := time.Until(t)
	if wait <= 0 {
		close(d.expired)
		return
	}
	gen, ch := d.gen, d.expired
	d.timer = time.AfterFunc(wait, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.gen == gen {
			close(ch)
		}
	})
}

// Done returns a channel that is closed when the deadline passes.
func (d *Deadline) Done() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.expired == nil {
		d.expired = make(chan struct{})
	}
	return d.expired
}

// Stop stops the timer, if one is set, for a listener that closes: nothing
// is left to fire after it.
func (d *Deadline) Stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopLocked()
}

func (d *Deadline) stopLocked() {
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}

func closed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
