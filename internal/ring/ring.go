// Package ring is a first-in, first-out queue that grows as needed and
// reuses its room, so that one in steady state allocates nothing: the
// completed connections of a backlog.Queue, and the gate's replies,
// resets and retiring translations in package netstack.
package ring

// A Ring is a FIFO. The zero value is an empty ring that keeps all the
// room it ever grew to.
type Ring[T any] struct {
	// Keep, above 0, is the most room an emptied ring keeps: one that a
	// burst grew past it lets the room go when the burst is over. 0
	// keeps everything, for a ring that fills and empties all the time.
	Keep int

	buf  []T
	head int // index of the oldest element
	n    int
}

// Len returns how many elements the ring holds.
func (r *Ring[T]) Len() int { return r.n }

// Push adds t as the newest element.
func (r *Ring[T]) Push(t T) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.buf[(r.head+r.n)%len(r.buf)] = t
	r.n++
}

func (r *Ring[T]) grow() {
	buf := make([]T, max(8, 2*len(r.buf)))
	for i := 0; i < r.n; i++ {
		buf[i] = r.buf[(r.head+i)%len(r.buf)]
	}
	r.buf, r.head = buf, 0
}

// Peek returns the oldest element without removing it.
func (r *Ring[T]) Peek() (t T, ok bool) {
	if r.n == 0 {
		return t, false
	}
	return r.buf[r.head], true
}

// Pop removes and returns the oldest element.
func (r *Ring[T]) Pop() (t T, ok bool) {
	if r.n == 0 {
		return t, false
	}
	var zero T
	t, r.buf[r.head] = r.buf[r.head], zero
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	r.shrink()
	return t, true
}

// PopNewest removes and returns the newest element.
func (r *Ring[T]) PopNewest() (t T, ok bool) {
	if r.n == 0 {
		return t, false
	}
	var zero T
	i := (r.head + r.n - 1) % len(r.buf)
	t, r.buf[i] = r.buf[i], zero
	r.n--
	r.shrink()
	return t, true
}

// shrink lets an emptied ring's room go, beyond Keep.
func (r *Ring[T]) shrink() {
	if r.n == 0 && r.Keep > 0 && len(r.buf) > r.Keep {
		r.buf, r.head = nil, 0
	}
}
