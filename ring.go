package backlog

// ring is a FIFO of completed connections that grows as needed and never
// shrinks, so a queue in steady state allocates nothing.
type ring[T any] struct {
	buf  []T
	head int // index of the oldest element
	n    int
}

func (r *ring[T]) len() int { return r.n }

func (r *ring[T]) push(t T) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.buf[(r.head+r.n)%len(r.buf)] = t
	r.n++
}

func (r *ring[T]) grow() {
	size := 2 * len(r.buf)
	if size == 0 {
		size = 8
	}
	buf := make([]T, size)
	for i := 0; i < r.n; i++ {
		buf[i] = r.buf[(r.head+i)%len(r.buf)]
	}
	r.buf, r.head = buf, 0
}

// pop removes the oldest element.
func (r *ring[T]) pop() (t T, ok bool) {
	if r.n == 0 {
		return t, false
	}
	var zero T
	t, r.buf[r.head] = r.buf[r.head], zero
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return t, true
}

// popNewest removes the most recently pushed element.
func (r *ring[T]) popNewest() (t T, ok bool) {
	if r.n == 0 {
		return t, false
	}
	var zero T
	i := (r.head + r.n - 1) % len(r.buf)
	t, r.buf[i] = r.buf[i], zero
	r.n--
	return t, true
}
