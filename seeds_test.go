package backlog

// Every behavioural statement of the seed documents, as a test named so that
// a reader of the seed finds it. The quoted sentence stands in each test's
// comment.

import (
	"testing"
)

// newQueue returns a queue of connection numbers under the named
// personality.
func newQueue(t testing.TB, name string, backlog int) *Queue[int] {
	t.Helper()
	q, err := NewQueue[int](MustLookup(name), backlog)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// fill offers connections 1, 2, … until one is not queued, and returns how
// many were queued and what the first one turned away met.
func fill(t testing.TB, q *Queue[int], start int) (queued int, turnedAway Outcome) {
	t.Helper()
	for i := start; i < start+1_000_000; i++ {
		o, _, _ := q.Offer(i)
		if o != Queued {
			return i - start, o
		}
	}
	t.Fatal("queue never filled")
	return 0, 0
}

func checkStored(t *testing.T, name string, requested, want int) {
	t.Helper()
	if got := MustLookup(name).Stored(requested); got != want {
		t.Errorf("%s: listen(%d) stores %d; want %d", name, requested, got, want)
	}
}

// Seed 000: "The WinSock version 1.1 specification states the maximum value
// for the backlog parameter is 5."
func TestSeed000_WinSock11MaximumIs5(t *testing.T) {
	checkStored(t, "winsock1.1", 5, 5)
	checkStored(t, "winsock1.1", 6, 5)
	checkStored(t, "winsock1.1", 100, 5)
}

// Seed 000: "The WinSock listen() call backlog parameter under Windows NT
// version 3.5 and 3.51 accepts a maximum value of 100." and "However, Windows
// NT version 3.5 accepts up to 100 for this value."
func TestSeed000_NT35And351AcceptMaximum100(t *testing.T) {
	for _, name := range []string{"winnt3.5", "winnt3.51"} {
		checkStored(t, name, 100, 100)
		checkStored(t, name, 101, 100)
		checkStored(t, name, 50, 50)
	}
}

// Seed 000: "The maximum backlog parameter is 5 on Windows NT 4.0
// Workstation, and 200 on Windows NT 4.0 Server."
func TestSeed000_NT4WorkstationStores5ForListen300(t *testing.T) {
	checkStored(t, "winnt4-workstation", 300, 5)
}

func TestSeed000_NT4ServerStores200ForListen300(t *testing.T) {
	checkStored(t, "winnt4-server", 300, 200)
	checkStored(t, "winnt4-server", 150, 150)
}

// Seed 000: "backlog, is defined as the maximum length to which the queue of
// pending connections may grow." Exactly that many connections wait on every
// Windows NT personality; the next is turned away.
func TestSeed000_QueueGrowsToBacklog(t *testing.T) {
	for _, tt := range []struct {
		name    string
		backlog int
		want    int
	}{
		{"winnt3.5", 100, 100},
		{"winnt4-workstation", 300, 5},
		{"winnt4-server", 300, 200},
	} {
		q := newQueue(t, tt.name, tt.backlog)
		if n, o := fill(t, q, 0); n != tt.want || o != Refused {
			t.Errorf("%s listen(%d): %d queued, then %v; want %d, then refused", tt.name, tt.backlog, n, o, tt.want)
		}
	}
}

// Seed 001: "As in 4.3BSD, illegal values (less than 1 or greater than 5)
// are replaced by the nearest valid value." Both Windows CE and 4.3BSD clamp
// 0 to 1 and 6 to 5.
func TestSeed001_IllegalValuesReplacedByNearestValidAsIn43BSD(t *testing.T) {
	for _, name := range []string{"wince", "bsd4.3"} {
		checkStored(t, name, 0, 1)
		checkStored(t, name, -5, 1)
		checkStored(t, name, 6, 5)
		checkStored(t, name, 1<<30, 5)
		for v := 1; v <= 5; v++ {
			checkStored(t, name, v, v)
		}
	}
}

// Seed 001 (and 003): "If this value is SOMAXCONN, then the underlying
// service provider responsible for socket s will set the backlog to a
// maximum reasonable value." SOMAXCONN gives each system's maximum.
func TestSeed001_SOMAXCONNGivesEachSystemsMaximum(t *testing.T) {
	want := map[string]int{
		"winsock1.1": 5, "winnt3.5": 100, "winnt4-workstation": 5, "winnt4-server": 200,
		"wince": 5, "irsock": 2, "win2000-sp1-wsd": 200, "wsp": 200, "windows": 200,
		"bsd4.3": 5, "freebsd": 128, "darwin": 128, "linux": 4096, "gvisor": 1024, "lwip": 255,
	}
	for _, p := range All() {
		if got := p.Stored(p.SOMAXCONN); got != want[p.Name] || got != p.Maximum() {
			t.Errorf("%s: listen(SOMAXCONN=%d) stores %d; want %d, the maximum (%d)", p.Name, p.SOMAXCONN, got, want[p.Name], p.Maximum())
		}
	}
}

// Seed 001: "The backlog parameter is currently limited (silently) to 2."
// IrSock keeps 2 whatever is asked.
func TestSeed001_IrSockKeeps2WhateverIsAsked(t *testing.T) {
	for _, req := range []int{-1 << 40, -1, 0, 1, 2, 3, 5, 300, WinsockSOMAXCONN, 1 << 40} {
		checkStored(t, "irsock", req, 2)
	}
	q := newQueue(t, "irsock", 300)
	if n, o := fill(t, q, 0); n != 2 || o != Refused {
		t.Errorf("irsock listen(300): %d queued, then %v; want 2, then refused", n, o)
	}
}

// Seed 001: "If a connection request arrives and the queue is full, the
// client will receive an error with an indication of WSAECONNREFUSED."
func TestSeed001_FullQueueGivesWSAECONNREFUSED(t *testing.T) {
	q := newQueue(t, "wince", 3)
	if n, o := fill(t, q, 0); n != 3 || o != Refused {
		t.Fatalf("wince listen(3): %d queued, then %v; want 3, then refused", n, o)
	}
	// A SYN, too, is refused at once, before any handshake.
	if o, _, _ := q.SYN(100); o != Refused {
		t.Errorf("SYN on a full wince queue: %v; want refused", o)
	}
}

// Seed 001: "If there are no available socket descriptors, listen attempts
// to continue to function. If descriptors become available, a later call to
// listen or accept will refill the queue to the current or most recent
// "backlog”, if possible, and resume listening for incoming connections."
func TestSeed001_NoDescriptorsListenKeepsWorkingAndLaterAcceptRefills(t *testing.T) {
	q := newQueue(t, "wince", 3)
	q.SetDescriptors(false)
	// It keeps working: connections are still queued up to the backlog.
	if n, _ := fill(t, q, 0); n != 3 {
		t.Fatalf("without descriptors, %d queued; want 3", n)
	}
	// Accepting frees slots, but without descriptors they are not refilled.
	q.Accept()
	q.Accept()
	if o, _, _ := q.Offer(10); o != Refused {
		t.Fatalf("after two accepts without descriptors: %v; want refused, the queue not refilled", o)
	}
	if got := q.Stats().Unavailable; got != 2 {
		t.Errorf("Unavailable = %d; want 2", got)
	}
	q.SetDescriptors(true)
	// A later accept refills the queue to the current backlog.
	q.Accept()
	if n, _ := fill(t, q, 20); n != 3 {
		t.Errorf("after descriptors came back and one accept, %d queued; want 3 (refilled to the backlog)", n)
	}
}

// Seed 001 (as for 003): "a later call to listen ... will refill the queue".
func TestSeed001_NoDescriptorsLaterListenRefills(t *testing.T) {
	q := newQueue(t, "wince", 2)
	q.SetDescriptors(false)
	fill(t, q, 0)
	q.Accept()
	q.Accept()
	if n, _ := fill(t, q, 10); n != 0 {
		t.Fatalf("without descriptors, %d queued after accepts; want 0", n)
	}
	q.SetDescriptors(true)
	if _, err := q.Listen(2); err != nil {
		t.Fatal(err)
	}
	if n, _ := fill(t, q, 20); n != 2 {
		t.Errorf("after listen() with descriptors back, %d queued; want 2", n)
	}
}

// Seed 001: "An application can call listen more than once on the same
// socket. This has the effect of updating the current backlog for the
// listening socket. Should there be more pending connections than the new
// backlog value, the excess pending connections will be reset and dropped."
// Linux, by contrast, keeps them (listen(2) only rewrites the backlog).
func TestSeed001_RelistenSmallerResetsExcessOnWindowsCEButKeepsItOnLinux(t *testing.T) {
	ce := newQueue(t, "wince", 5)
	fill(t, ce, 0)
	reset, err := ce.Listen(2)
	if err != nil {
		t.Fatal(err)
	}
	if len(reset) != 3 || ce.Len() != 2 || ce.Backlog() != 2 {
		t.Errorf("wince listen(5) then listen(2): %d reset, %d left, backlog %d; want 3, 2, 2", len(reset), ce.Len(), ce.Backlog())
	}
	// The newest are reset; the oldest keep their place.
	for i, want := range []int{4, 3, 2} {
		if reset[i] != want {
			t.Errorf("reset[%d] = %d; want %d (newest first)", i, reset[i], want)
		}
	}
	if c, _ := ce.Accept(); c != 0 {
		t.Errorf("first accepted after the reset: %d; want 0", c)
	}

	lx := newQueue(t, "linux", 5)
	fill(t, lx, 0) // 6 wait
	reset, err = lx.Listen(2)
	if err != nil {
		t.Fatal(err)
	}
	if len(reset) != 0 || lx.Len() != 6 || lx.Backlog() != 2 {
		t.Errorf("linux listen(5) then listen(2): %d reset, %d left, backlog %d; want 0, 6, 2", len(reset), lx.Len(), lx.Backlog())
	}
	// New arrivals wait until the queue drains below the new limit.
	if o, _, _ := lx.Offer(100); o != Ignored {
		t.Errorf("linux after shrinking: new arrival %v; want ignored", o)
	}
	for range 4 {
		lx.Accept()
	}
	if o, _, _ := lx.Offer(101); o != Queued {
		t.Errorf("linux after draining to 2: new arrival %v; want queued", o)
	}
}

// Seed 001: "This has the effect of updating the current backlog": a larger
// backlog takes effect at once.
func TestSeed001_RelistenLargerUpdatesBacklog(t *testing.T) {
	q := newQueue(t, "wince", 2)
	fill(t, q, 0)
	if _, err := q.Listen(4); err != nil {
		t.Fatal(err)
	}
	if n, _ := fill(t, q, 10); n != 2 {
		t.Errorf("after listen(2) then listen(4) on a full queue, %d more queued; want 2", n)
	}
}

// Seed 002 (KB 295079): "When server side calls an accept() parameter, this
// increments the available backlog by 1. However, this increment does not
// take place until the program thread is preempted. The server refuses a
// connection attempt during this time." The win2000-sp1-wsd personality
// reproduces the defect on purpose.
func TestSeed002_KB295079DefectRefusesUntilThreadYields(t *testing.T) {
	q := newQueue(t, "win2000-sp1-wsd", 2)
	fill(t, q, 0)
	if _, ok := q.Accept(); !ok {
		t.Fatal("nothing to accept")
	}
	if o, _, _ := q.Offer(10); o != Refused {
		t.Fatalf("right after accept(): %v; want refused (the defect)", o)
	}
	if s := q.Stats(); s.DeferredRefusals != 1 || s.Unavailable != 1 {
		t.Errorf("DeferredRefusals %d, Unavailable %d; want 1, 1", s.DeferredRefusals, s.Unavailable)
	}
	q.Yield() // the accepting thread is pre-empted
	if o, _, _ := q.Offer(11); o != Queued {
		t.Errorf("after the thread yielded: %v; want queued", o)
	}
}

// KB 295079: "This problem was first corrected in Windows 2000 Service Pack
// 2." Every other personality returns the slot freed by accept() to the very
// next arrival, at once.
func TestKB295079_SlotFreedByAcceptIsAvailableToTheNextArrival(t *testing.T) {
	for _, p := range All() {
		if p.DeferredSlotReturn {
			continue
		}
		q, err := NewQueue[int](p, 3)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := fill(t, q, 0)
		if _, ok := q.Accept(); !ok {
			t.Fatalf("%s: nothing to accept", p.Name)
		}
		if o, _, _ := q.Offer(1000); o != Queued {
			t.Errorf("%s: arrival right after accept() on a full queue of %d: %v; want queued", p.Name, n, o)
		}
	}
}

// Seed 002: "If a connection request is received and the pending-connection
// queue is full, Windows NT issues TCP/IP resets on subsequent connection
// requests."
func TestSeed002_FullQueueIssuesResets(t *testing.T) {
	q := newQueue(t, "winnt4-server", 10)
	fill(t, q, 0)
	for i := 0; i < 5; i++ {
		if o, _, _ := q.SYN(100 + i); o != Refused {
			t.Errorf("subsequent SYN %d: %v; want refused (RST)", i, o)
		}
	}
	if s := q.Stats(); s.Refused != 6 || s.ListenOverflows != 6 {
		t.Errorf("Refused %d, ListenOverflows %d; want 6, 6", s.Refused, s.ListenOverflows)
	}
}

// Seed 003: "The backlog parameter is limited (silently) to a reasonable
// value as determined by the service provider. Illegal values are replaced by
// the nearest legal value."
func TestSeed003_WSPListenReplacesIllegalValuesByNearestLegal(t *testing.T) {
	checkStored(t, "wsp", 0, 1)
	checkStored(t, "wsp", -3, 1)
	checkStored(t, "wsp", 100000, 200)
	checkStored(t, "wsp", WinsockSOMAXCONN, 200)
}

// Seed 003: "if a connection request arrives with the queue full, the client
// will receive an error with an indication of WSAECONNREFUSED."
func TestSeed003_WSPFullQueueRefuses(t *testing.T) {
	q := newQueue(t, "wsp", 4)
	if n, o := fill(t, q, 0); n != 4 || o != Refused {
		t.Errorf("wsp listen(4): %d queued, then %v; want 4, refused", n, o)
	}
}

// Seed 003: "WSPListen should continue to function rationally when there are
// no available descriptors. It should accept connections until the queue is
// emptied. If descriptors become available, a later call to WSPListen or
// WSPAccept will refill the queue to the current or most recent backlog, if
// possible, and resume listening for incoming connections."
func TestSeed003_WSPAcceptsUntilQueueEmptiedThenRefills(t *testing.T) {
	q := newQueue(t, "wsp", 3)
	q.SetDescriptors(false)
	fill(t, q, 0)
	for i := 0; i < 3; i++ {
		if _, ok := q.Accept(); !ok {
			t.Fatalf("accept %d: queue empty too early", i)
		}
	}
	if _, ok := q.Accept(); ok {
		t.Fatal("accepted from an emptied queue")
	}
	if o, _, _ := q.Offer(50); o != Refused {
		t.Fatalf("emptied queue without descriptors: %v; want refused", o)
	}
	q.SetDescriptors(true)
	if _, err := q.Listen(3); err != nil {
		t.Fatal(err)
	}
	if n, _ := fill(t, q, 60); n != 3 {
		t.Errorf("after WSPListen with descriptors back: %d queued; want 3", n)
	}
}

// Seed 003: "Should there be more pending connections than the new backlog
// value, the excess pending connections will be reset and dropped." Half-open
// connections are pending too; they are reset first.
func TestSeed003_WSPRelistenResetsExcessPendingIncludingHalfOpen(t *testing.T) {
	q := newQueue(t, "wsp", 4)
	q.Offer(1)
	q.Offer(2)
	q.SYN(3)
	q.SYN(4)
	reset, err := q.Listen(1)
	if err != nil {
		t.Fatal(err)
	}
	if len(reset) != 3 || reset[0] != 4 || reset[1] != 3 || reset[2] != 2 {
		t.Errorf("reset %v; want [4 3 2]: half-open newest first, then completed newest first", reset)
	}
	if q.Len() != 1 || q.HalfOpen() != 0 {
		t.Errorf("left %d queued, %d half-open; want 1, 0", q.Len(), q.HalfOpen())
	}
}

// Seed 004 (listen(2) on Linux): "If the backlog argument is greater than
// the value in /proc/sys/net/core/somaxconn, then it is silently truncated to
// that value".
func TestSeed004_LinuxTruncatesAboveSomaxconnSilently(t *testing.T) {
	checkStored(t, "linux", 5000, 4096)
	checkStored(t, "linux:somaxconn=128", 129, 128)
	checkStored(t, "linux:somaxconn=128", 128, 128)
	checkStored(t, "linux-2.2", 1000, 128)
	// Negative values are huge when read as unsigned.
	checkStored(t, "linux", -1, 4096)
}

// Seed 004: "Now it specifies the queue length for completely established
// sockets waiting to be accepted, instead of the number of incomplete
// connection requests." Half-open handshakes do not take places in the
// accept queue: listen(1) holds 2 established connections and, besides them,
// 2 half-open ones.
func TestSeed004_LinuxBacklogCountsEstablishedSocketsOnly(t *testing.T) {
	q := newQueue(t, "linux:syncookies=0", 1)
	for c := 1; c <= 2; c++ {
		if o, _, _ := q.SYN(c); o != HalfOpen {
			t.Fatalf("SYN %d: %v", c, o)
		}
	}
	if o, _, _ := q.SYN(3); o != Ignored {
		t.Errorf("third SYN with two half-open: %v; want ignored (SYN queue holds N+1)", o)
	}
	for c := 1; c <= 2; c++ {
		if o := q.Established(c); o != Queued {
			t.Fatalf("handshake %d: %v", c, o)
		}
	}
	for c := 4; c <= 5; c++ {
		if o, _, _ := q.SYN(c); o != Ignored {
			t.Errorf("SYN %d with a full accept queue: %v; want ignored", c, o)
		}
	}
	if q.Len() != 2 {
		t.Errorf("%d established wait; want 2 (N+1)", q.Len())
	}
}

// Seed 004: "The maximum length of the queue for incomplete sockets can be
// set using /proc/sys/net/ipv4/tcp_max_syn_backlog. When syncookies are
// enabled there is no logical maximum length and this setting is ignored."
func TestSeed004_MaxSynBacklogBoundsIncompleteOnlyWithoutSyncookies(t *testing.T) {
	// Cookies off: tcp_max_syn_backlog=8 drops a SYN once fewer than 8/4
	// places remain, i.e. beyond 6 half-open, although listen(100)'s own
	// SYN queue would hold 101.
	off := newQueue(t, "linux:syncookies=0,max_syn_backlog=8", 100)
	held := 0
	for c := 0; c < 20; c++ {
		if o, _, _ := off.SYN(c); o == HalfOpen {
			held++
		}
	}
	if held != 7 {
		t.Errorf("cookies off, max_syn_backlog=8: %d half-open; want 7", held)
	}
	// Cookies on: the same setting is ignored; past the SYN queue every
	// SYN is answered with a cookie, and the cookie becomes a connection.
	on := newQueue(t, "linux:syncookies=1,max_syn_backlog=8", 3)
	outcomes := map[Outcome]int{}
	for c := 0; c < 20; c++ {
		o, _, _ := on.SYN(c)
		outcomes[o]++
	}
	if outcomes[HalfOpen] != 4 || outcomes[Cookie] != 16 {
		t.Errorf("cookies on, listen(3): %v; want 4 half-open, 16 cookies", outcomes)
	}
	if o := on.CookieACK(19); o != Queued {
		t.Errorf("valid cookie ACK: %v; want queued", o)
	}
}

// Seed 004: "If a connection request arrives when the queue is full, the
// client may receive an error with an indication of ECONNREFUSED or, if the
// underlying protocol supports retransmission, the request may be ignored so
// that a later reattempt at connection succeeds."
func TestSeed004_FullQueueIgnoresSoThatLaterReattemptSucceeds(t *testing.T) {
	q := newQueue(t, "linux", 2)
	if n, o := fill(t, q, 0); n != 3 || o != Ignored {
		t.Fatalf("linux listen(2): %d queued, then %v; want 3 (N+1), then ignored", n, o)
	}
	q.Accept()
	if o, _, _ := q.Offer(3); o != Queued {
		t.Errorf("the reattempt after an accept: %v; want queued", o)
	}
	if s := q.Stats(); s.ListenOverflows != 1 || s.ListenDrops != 1 {
		t.Errorf("ListenOverflows %d, ListenDrops %d; want 1, 1", s.ListenOverflows, s.ListenDrops)
	}
}

// Seed 004: Twisted "exactly corresponds to the "backlog" parameter of the
// BSD socket API": its default of 50 becomes what each system makes of 50.
func TestSeed004_TwistedDefault50IsWhatEachSystemMakesOfIt(t *testing.T) {
	want := map[string]int{"linux": 51, "freebsd": 76, "darwin": 50, "winnt4-workstation": 5, "windows": 50, "irsock": 2}
	for name, capacity := range want {
		if _, c := MustLookup(name).Listen(TwistedDefaultBacklog); c != capacity {
			t.Errorf("%s: listenTCP default (50) holds %d; want %d", name, c, capacity)
		}
	}
}
