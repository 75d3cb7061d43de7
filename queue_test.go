package backlog

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// TestFullQueuePerPersonality fills a queue of backlog 5 with completed
// connections and checks how many wait and what the next one meets.
func TestFullQueuePerPersonality(t *testing.T) {
	want := map[string]struct {
		queued int
		next   Outcome
	}{
		"winsock1.1": {5, Refused}, "winnt3.5": {5, Refused}, "winnt4-workstation": {5, Refused},
		"winnt4-server": {5, Refused}, "wince": {5, Refused}, "irsock": {2, Refused},
		"win2000-sp1-wsd": {5, Refused}, "wsp": {5, Refused}, "windows": {5, Refused},
		"bsd4.3": {8, Ignored}, "freebsd": {8, Reset}, "darwin": {5, Ignored},
		"linux": {6, Ignored}, "gvisor": {6, Ignored}, "lwip": {5, Ignored},
	}
	for _, p := range All() {
		q, err := NewQueue[int](p, 5)
		if err != nil {
			t.Fatal(err)
		}
		n, o := fill(t, q, 0)
		if w := want[p.Name]; n != w.queued || o != w.next {
			t.Errorf("%s listen(5): %d queued, then %v; want %d, then %v", p.Name, n, o, w.queued, w.next)
		}
		if n != q.Capacity() {
			t.Errorf("%s: %d queued but Capacity() = %d", p.Name, n, q.Capacity())
		}
	}
}

// TestHalfOpenSharesTheLimit checks that on systems counting from the SYN,
// a half-open handshake takes a slot, while on Linux it does not.
func TestHalfOpenSharesTheLimit(t *testing.T) {
	for _, tt := range []struct {
		name string
		next Outcome
	}{
		{"winnt4-server", Refused},
		{"lwip", Ignored},
		{"bsd4.3", Ignored},
	} {
		q := newQueue(t, tt.name, 2)
		c := q.Capacity()
		for i := 0; i < c; i++ {
			if o, _, _ := q.SYN(i); o != HalfOpen {
				t.Fatalf("%s: SYN %d: %v", tt.name, i, o)
			}
		}
		if o, _, _ := q.SYN(c); o != tt.next {
			t.Errorf("%s: SYN beyond %d half-open: %v; want %v", tt.name, c, o, tt.next)
		}
		// Completing the handshakes never overflows: the slot was taken
		// at the SYN.
		for i := 0; i < c; i++ {
			if o := q.Established(i); o != Queued {
				t.Errorf("%s: handshake %d completed: %v; want queued", tt.name, i, o)
			}
		}
	}
}

// TestDarwinEvictsHalfOpen checks XNU's tcp_dropdropablreq: a SYN on a full
// queue displaces the oldest half-open connection, and is dropped when every
// slot holds a completed one.
func TestDarwinEvictsHalfOpen(t *testing.T) {
	q := newQueue(t, "darwin", 3)
	q.Offer(1)
	q.SYN(2)
	q.SYN(3)
	o, victim, ok := q.SYN(4)
	if o != HalfOpen || !ok || victim != 2 {
		t.Fatalf("SYN on a full queue = %v, victim %d (%v); want half-open, victim 2", o, victim, ok)
	}
	if o := q.Established(2); o != Stale {
		t.Errorf("the evicted connection's ACK: %v; want stale", o)
	}
	q.Established(3)
	q.Established(4)
	if o, _, ok := q.SYN(5); o != Ignored || ok {
		t.Errorf("SYN with every slot complete: %v (evicted %v); want ignored", o, ok)
	}
	if s := q.Stats(); s.Evicted != 1 || s.Len != 3 {
		t.Errorf("Evicted %d, Len %d; want 1, 3", s.Evicted, s.Len)
	}
}

// TestLinuxFinalACKOnFullQueue checks tcp_check_req: with
// tcp_abort_on_overflow=0 the final ACK is dropped and the request stays
// half-open (the client believes it is connected); with 1 it is reset.
func TestLinuxFinalACKOnFullQueue(t *testing.T) {
	// listen(1): two completed connections and two half-open ones fit.
	// Three handshakes in flight: SYN 1, SYN 2, ACK 1, SYN 3, ACK 2, then
	// ACK 3 finds the queue full.
	handshakes := func(q *Queue[int]) {
		t.Helper()
		for _, step := range []struct {
			syn bool
			c   int
		}{{true, 1}, {true, 2}, {false, 1}, {true, 3}, {false, 2}} {
			var o Outcome
			if step.syn {
				o, _, _ = q.SYN(step.c)
			} else {
				o = q.Established(step.c)
			}
			if o != HalfOpen && o != Queued {
				t.Fatalf("step %+v: %v", step, o)
			}
		}
	}
	drop := newQueue(t, "linux", 1)
	handshakes(drop)
	if o := drop.Established(3); o != HalfOpen {
		t.Errorf("ACK on a full queue: %v; want half-open (ACK dropped)", o)
	}
	if drop.HalfOpen() != 1 {
		t.Errorf("%d half-open; want 1, kept for the SYN-ACK retransmission", drop.HalfOpen())
	}
	drop.Accept()
	if o := drop.Established(3); o != Queued {
		t.Errorf("the retransmitted ACK after accept(): %v; want queued", o)
	}

	abort := newQueue(t, "linux:abort_on_overflow=1", 1)
	handshakes(abort)
	if o := abort.Established(3); o != Reset {
		t.Errorf("abort_on_overflow=1, ACK on a full queue: %v; want reset", o)
	}
	if abort.HalfOpen() != 0 {
		t.Errorf("%d half-open after the reset; want 0", abort.HalfOpen())
	}
	// A cookie ACK that overflows is dropped even with abort_on_overflow=1.
	if o := abort.CookieACK(3); o != Ignored {
		t.Errorf("abort_on_overflow=1, cookie ACK on a full queue: %v; want ignored", o)
	}
}

// TestLinuxSyncookiesAlways checks tcp_syncookies=2: every SYN gets a cookie,
// none is held, and a SYN on a full accept queue is still dropped.
func TestLinuxSyncookiesAlways(t *testing.T) {
	q := newQueue(t, "linux:syncookies=2", 1)
	for i := 0; i < 3; i++ {
		if o, _, _ := q.SYN(i); o != Cookie {
			t.Errorf("SYN %d: %v; want cookie", i, o)
		}
	}
	q.CookieACK(0)
	q.CookieACK(1)
	if o, _, _ := q.SYN(9); o != Ignored {
		t.Errorf("SYN on a full accept queue: %v; want ignored", o)
	}
	s := q.Stats()
	if s.HalfOpen != 0 || s.SyncookiesSent != 3 || s.SyncookiesRecv != 2 || s.TCPReqQFullDoCookies != 4 {
		t.Errorf("stats %+v; want 0 half-open, 3 cookies sent, 2 received, 4 TCPReqQFullDoCookies", s)
	}
}

// TestFreeBSDAnswersThenResets checks the syncache model: SYNs are answered
// whatever the listen queue holds, and the final ACK that finds it full is
// reset (rst_on_sock_fail=1).
func TestFreeBSDAnswersThenResets(t *testing.T) {
	q := newQueue(t, "freebsd", 1) // capacity 2
	for i := 0; i < 4; i++ {
		if o, _, _ := q.SYN(i); o != HalfOpen {
			t.Fatalf("SYN %d: %v; want half-open", i, o)
		}
	}
	got := []Outcome{q.Established(0), q.Established(1), q.Established(2), q.CookieACK(3)}
	want := []Outcome{Queued, Queued, Reset, Reset}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("final ACK %d: %v; want %v", i, got[i], want[i])
		}
	}
}

// TestGVisorRelistenFails checks gVisor's endpoint.listen: shrinking below
// what waits fails and changes nothing; otherwise it updates.
func TestGVisorRelistenFails(t *testing.T) {
	q := newQueue(t, "gvisor", 3) // capacity 4
	fill(t, q, 0)
	if _, err := q.Listen(1); !errors.Is(err, ErrRelisten) {
		t.Fatalf("listen(1) with 4 waiting: %v; want ErrRelisten", err)
	}
	if q.Backlog() != 3 {
		t.Errorf("backlog %d after a failed listen; want 3", q.Backlog())
	}
	if _, err := q.Listen(10); err != nil || q.Backlog() != 10 {
		t.Errorf("listen(10): %v, backlog %d; want nil, 10", err, q.Backlog())
	}
}

// TestWindowsRelistenUnchanged checks the current Winsock reference: a
// second listen() succeeds and keeps the backlog.
func TestWindowsRelistenUnchanged(t *testing.T) {
	q := newQueue(t, "windows", 5)
	fill(t, q, 0)
	reset, err := q.Listen(1)
	if err != nil || len(reset) != 0 || q.Backlog() != 5 || q.Len() != 5 {
		t.Errorf("listen(1) on windows: reset %v, err %v, backlog %d, %d waiting; want none, nil, 5, 5", reset, err, q.Backlog(), q.Len())
	}
}

func TestExpireFreesTheSlot(t *testing.T) {
	q := newQueue(t, "winnt4-workstation", 1)
	q.SYN(1)
	if o, _, _ := q.SYN(2); o != Refused {
		t.Fatalf("second SYN: %v; want refused", o)
	}
	if !q.Expire(1) || q.Expire(1) {
		t.Fatal("Expire(1) did not report the held handshake exactly once")
	}
	if o, _, _ := q.SYN(3); o != HalfOpen {
		t.Errorf("SYN after the expiry: %v; want half-open", o)
	}
	if o := q.Established(1); o != Stale {
		t.Errorf("late ACK of the expired handshake: %v; want stale", o)
	}
	if s := q.Stats(); s.Reset != 0 || s.Expired != 1 {
		t.Errorf("Reset %d, Expired %d; want 0, 1: a stale ACK is not counted again", s.Reset, s.Expired)
	}
}

func TestCloseResetsEverythingPending(t *testing.T) {
	q := newQueue(t, "linux", 5)
	q.Offer(1)
	q.Offer(2)
	q.SYN(3)
	reset := q.Close()
	if len(reset) != 3 || reset[0] != 1 || reset[1] != 2 || reset[2] != 3 {
		t.Errorf("Close() = %v; want [1 2 3]", reset)
	}
	if o, _, _ := q.SYN(4); o != Refused {
		t.Errorf("SYN after Close: %v; want refused", o)
	}
	if _, err := q.Listen(5); !errors.Is(err, ErrClosed) {
		t.Errorf("Listen after Close: %v; want ErrClosed", err)
	}
	if q.Close() != nil {
		t.Error("second Close returned entries")
	}
}

func TestReadyWakesAWaiter(t *testing.T) {
	q := newQueue(t, "linux", 5)
	got := make(chan int)
	go func() {
		for {
			if c, ok := q.Accept(); ok {
				got <- c
				return
			}
			<-q.Ready()
		}
	}()
	time.Sleep(time.Millisecond) // let the waiter block, if it will
	q.Offer(42)
	select {
	case c := <-got:
		if c != 42 {
			t.Errorf("accepted %d; want 42", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter never woke")
	}
}

// TestConcurrentUse runs SYNs, handshakes, accepts, expiries and re-listens
// from many goroutines (under -race in CI) and checks that every connection
// is accounted for exactly once.
func TestConcurrentUse(t *testing.T) {
	for _, name := range []string{"linux", "winnt4-server", "darwin", "freebsd", "wince"} {
		q := newQueue(t, name, 16)
		const workers, per = 8, 500
		var wg sync.WaitGroup
		var mu sync.Mutex
		terminal := map[int]Outcome{}
		record := func(c int, o Outcome) {
			mu.Lock()
			defer mu.Unlock()
			if prev, dup := terminal[c]; dup {
				t.Errorf("%s: connection %d ended twice: %v then %v", name, c, prev, o)
			}
			terminal[c] = o
		}
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < per; i++ {
					c := w*per + i
					o, victim, evicted := q.SYN(c)
					if evicted {
						record(victim, Evicted)
					}
					switch o {
					case HalfOpen:
						if i%7 == 0 && q.Expire(c) {
							record(c, Expired)
							continue
						}
						for o = q.Established(c); o == HalfOpen; o = q.Established(c) {
							if got, ok := q.Accept(); ok { // retransmitted ACK, after making room
								record(got, Accepted)
							}
						}
						if o == Reset {
							record(c, Reset)
						}
					case Cookie:
						if o = q.CookieACK(c); o != Queued {
							record(c, o)
						}
					default:
						record(c, o)
					}
					if i%2 == 0 {
						if got, ok := q.Accept(); ok {
							record(got, Accepted)
						}
					}
					if i%97 == 0 {
						for _, r := range must(q.Listen(8 + i%16)) {
							record(r, Reset)
						}
					}
				}
			}(w)
		}
		wg.Wait()
		for _, r := range q.Close() {
			record(r, Reset)
		}
		if len(terminal) != workers*per {
			t.Errorf("%s: %d connections accounted for; want %d", name, len(terminal), workers*per)
		}
		counts := map[Outcome]uint64{}
		for _, o := range terminal {
			counts[o]++
		}
		s := q.Stats()
		if s.Accepted != counts[Accepted] || s.Evicted != counts[Evicted] || s.Expired != counts[Expired] || s.Refused != counts[Refused] {
			t.Errorf("%s: stats %+v disagree with what callers saw %v", name, s, counts)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestOutcomeStrings(t *testing.T) {
	for o := HalfOpen; o <= Stale; o++ {
		if s := o.String(); s == "" || s[0] == 'O' {
			t.Errorf("Outcome(%d).String() = %q", o, s)
		}
	}
	if got := Outcome(200).String(); got != "Outcome(200)" {
		t.Errorf("unknown outcome prints %q", got)
	}
}
