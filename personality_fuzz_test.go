package backlog

import (
	"math"
	"testing"
)

// largest returns the largest backlog a clamp can store.
func largest(c Clamp) int {
	if c.Kind == ClampWinsockHint {
		return max(c.Max, c.HintMax)
	}
	return c.Max
}

// FuzzClamp feeds every personality, and Linux, FreeBSD and macOS with any
// somaxconn, requests from the whole int range: the stored backlog stays
// within the system's bounds, at least one connection can always wait, and a
// larger positive request never stores less.
func FuzzClamp(f *testing.F) {
	for _, v := range []int64{0, 1, -1, 5, 6, 128, 4096, math.MaxInt32, math.MinInt32, math.MaxInt64, math.MinInt64, 1 << 32, -(1 << 32) - 5} {
		f.Add(v, v+1, int64(4096))
	}
	f.Fuzz(func(t *testing.T, a, b, somaxconn int64) {
		ps := All()
		if s := int(somaxconn); s >= 1 && s <= maxInt32 {
			c := DefaultLinuxConfig()
			c.Somaxconn = s
			ps = append(ps, Linux(c), FreeBSD(FreeBSDConfig{Somaxconn: min(s, 65535)}), Darwin(DarwinConfig{Somaxconn: min(s, 32767)}))
		}
		for _, p := range ps {
			for _, v := range []int{int(a), int(b)} {
				stored, capacity := p.Listen(v)
				if stored < 0 || stored > largest(p.Clamp) {
					t.Fatalf("%s: listen(%d) stores %d, outside 0..%d", p, v, stored, largest(p.Clamp))
				}
				if capacity < 1 {
					t.Fatalf("%s: listen(%d) holds %d connections", p, v, capacity)
				}
				if p.HalfOpenLimit(stored) < 0 {
					t.Fatalf("%s: listen(%d): half-open limit %d", p, v, p.HalfOpenLimit(stored))
				}
			}
			lo, hi := min(a, b), max(a, b)
			if lo > 0 && p.Stored(int(lo)) > p.Stored(int(hi)) {
				t.Fatalf("%s: listen(%d) stores %d, more than listen(%d) stores, %d", p, lo, p.Stored(int(lo)), hi, p.Stored(int(hi)))
			}
		}
	})
}
