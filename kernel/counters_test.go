package kernel

import (
	"testing"
)

// TestCountersSub checks the difference of two readings.
func TestCountersSub(t *testing.T) {
	a := Counters{ListenOverflows: 10, ListenDrops: 12, TCPReqQFullDrop: 1, TCPReqQFullDoCookies: 2, SyncookiesSent: 3, SyncookiesRecv: 4, SyncookiesFailed: 5}
	b := Counters{ListenOverflows: 7, ListenDrops: 8, SyncookiesSent: 1}
	want := Counters{ListenOverflows: 3, ListenDrops: 4, TCPReqQFullDrop: 1, TCPReqQFullDoCookies: 2, SyncookiesSent: 2, SyncookiesRecv: 4, SyncookiesFailed: 5}
	if got := a.Sub(b); got != want {
		t.Errorf("Sub: %+v; want %+v", got, want)
	}
}
