package kernel

import (
	"testing"
	"time"
)

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
