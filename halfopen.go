package backlog

// halfOpenSet holds half-open connections in arrival order, with removal of
// any of them in constant time. Nodes are recycled through a free list, so a
// set in steady state allocates nothing.
type halfOpenSet[T comparable] struct {
	index      map[T]*halfNode[T]
	head, tail *halfNode[T] // oldest, newest
	free       *halfNode[T]
	nFree      int // nodes on the free list, at most keepFree
	peak       int // the most entries index has held since it was made
}

// keepFree bounds the nodes a set keeps for reuse, and shrinkAbove the
// entries its index may have held before an empty set makes a new one: a
// map keeps the room it grew to, and a burst of handshakes should not pin
// memory for good.
const (
	keepFree    = 256
	shrinkAbove = 1024
)

type halfNode[T comparable] struct {
	v          T
	prev, next *halfNode[T]
}

func (s *halfOpenSet[T]) len() int { return len(s.index) }

func (s *halfOpenSet[T]) contains(t T) bool {
	_, ok := s.index[t]
	return ok
}

// push adds t as the newest entry. Adding an entry already held keeps its
// place.
func (s *halfOpenSet[T]) push(t T) {
	if _, ok := s.index[t]; ok {
		return
	}
	n := s.free
	if n != nil {
		s.free = n.next
		n.next = nil
		s.nFree--
	} else {
		n = new(halfNode[T])
	}
	n.v = t
	n.prev = s.tail
	if s.tail != nil {
		s.tail.next = n
	} else {
		s.head = n
	}
	s.tail = n
	s.index[t] = n
	s.peak = max(s.peak, len(s.index))
}

// remove deletes t and reports whether it was held.
func (s *halfOpenSet[T]) remove(t T) bool {
	n, ok := s.index[t]
	if !ok {
		return false
	}
	s.unlink(n)
	return true
}

func (s *halfOpenSet[T]) unlink(n *halfNode[T]) {
	delete(s.index, n.v)
	if n.prev != nil {
		n.prev.next = n.next
	} else {
		s.head = n.next
	}
	if n.next != nil {
		n.next.prev = n.prev
	} else {
		s.tail = n.prev
	}
	var zero T
	n.v, n.prev, n.next = zero, nil, nil
	if s.nFree < keepFree {
		n.next, s.free = s.free, n
		s.nFree++
	}
	if len(s.index) == 0 && s.peak > shrinkAbove {
		s.index, s.peak = make(map[T]*halfNode[T]), 0
	}
}

func (s *halfOpenSet[T]) popOldest() (t T, ok bool) {
	if s.head == nil {
		return t, false
	}
	t = s.head.v
	s.unlink(s.head)
	return t, true
}

func (s *halfOpenSet[T]) popNewest() (t T, ok bool) {
	if s.tail == nil {
		return t, false
	}
	t = s.tail.v
	s.unlink(s.tail)
	return t, true
}
