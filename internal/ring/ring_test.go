package ring

import "testing"

// TestRing pushes and pops across the wrap of the buffer and through its
// growth, from both ends, against a slice doing the same.
func TestRing(t *testing.T) {
	var r Ring[int]
	var want []int
	next := 0
	for step := 0; step < 1000; step++ {
		switch step % 7 {
		case 0, 1, 2, 3:
			r.Push(next)
			want = append(want, next)
			next++
		case 4, 5:
			got, ok := r.Pop()
			if ok != (len(want) > 0) || ok && got != want[0] {
				t.Fatalf("step %d: Pop = %d, %v; want %v", step, got, ok, want)
			}
			if ok {
				want = want[1:]
			}
		case 6:
			got, ok := r.PopNewest()
			if ok != (len(want) > 0) || ok && got != want[len(want)-1] {
				t.Fatalf("step %d: PopNewest = %d, %v; want %v", step, got, ok, want)
			}
			if ok {
				want = want[:len(want)-1]
			}
		}
		if r.Len() != len(want) {
			t.Fatalf("step %d: Len %d; want %d", step, r.Len(), len(want))
		}
		if v, ok := r.Peek(); ok != (len(want) > 0) || ok && v != want[0] {
			t.Fatalf("step %d: Peek = %d, %v; want %v", step, v, ok, want)
		}
	}
}

// TestRingKeep: an emptied ring keeps its room unless a burst grew it
// past Keep, and one in steady state allocates nothing.
func TestRingKeep(t *testing.T) {
	for _, keep := range []int{0, 16} {
		r := Ring[int]{Keep: keep}
		for i := range 100 {
			r.Push(i)
		}
		for r.Len() > 0 {
			r.Pop()
		}
		if kept := cap(r.buf) > 0; kept != (keep == 0) {
			t.Errorf("Keep %d: an emptied ring of room %d kept it: %v", keep, cap(r.buf), kept)
		}
	}
	var r Ring[int]
	if n := testing.AllocsPerRun(100, func() {
		for i := range 64 {
			r.Push(i)
		}
		for r.Len() > 0 {
			r.Pop()
		}
	}); n != 0 {
		t.Errorf("a ring in steady state allocates %.0f times a cycle", n)
	}
}
