package backlog

import (
	"errors"
	"testing"
	"time"
)

// at returns the moment ms milliseconds after an arbitrary origin.
func at(ms int) time.Time {
	return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(ms) * time.Millisecond)
}

const ms = time.Millisecond

// step is one connection taken: at when, the oldest waiting had waited
// wait, and the verdict wanted.
type step struct {
	when int
	wait time.Duration
	want Verdict
}

func run(t *testing.T, s *Shedder, steps []step) {
	t.Helper()
	for i, st := range steps {
		if got := s.Decide(at(st.when), st.wait); got != st.want {
			t.Errorf("step %d: Decide(t=%dms, wait %v) = %v; want %v", i, st.when, st.wait, got, st.want)
		}
	}
}

// TestShedderOffServesAll: the zero policy serves every connection, however
// long it waited, and never stands.
func TestShedderOffServesAll(t *testing.T) {
	s := NewShedder(Overload{})
	for i := range 100 {
		if v := s.Decide(at(i*100), time.Duration(i)*time.Second); v != Serve {
			t.Fatalf("the zero policy shed a connection at step %d", i)
		}
	}
	if s.Standing(at(10000)) || s.LIFO(at(10000)) {
		t.Error("the zero policy stands or serves newest first")
	}
	if n, change := s.Backlog(at(10000), 5); change {
		t.Errorf("the zero policy sizes the backlog to %d", n)
	}
}

// TestShedderBurstsPass is CoDel's interval rule: waits within the target
// never shed, and waits past it shed nothing until they have stayed past
// it for a whole interval; a burst that drains within the interval, or
// whose waits dip back under the target, is served untouched.
func TestShedderBurstsPass(t *testing.T) {
	o := Overload{Target: 50 * ms, Interval: 100 * ms}
	t.Run("under the target", func(t *testing.T) {
		s := NewShedder(o)
		var steps []step
		for i := range 1000 {
			steps = append(steps, step{i, 50 * ms, Serve})
		}
		run(t, s, steps)
	})
	t.Run("past the target for less than an interval", func(t *testing.T) {
		s := NewShedder(o)
		run(t, s, []step{
			{0, 10 * ms, Serve}, {10, 300 * ms, Serve}, {50, 400 * ms, Serve}, {109, 500 * ms, Serve},
			{110, 20 * ms, Serve}, // drained
			{150, 300 * ms, Serve}, {249, 300 * ms, Serve},
		})
		if s.Standing(at(249)) {
			t.Error("standing after bursts shorter than the interval")
		}
	})
	t.Run("one dip under the target restarts the interval", func(t *testing.T) {
		s := NewShedder(o)
		run(t, s, []step{
			{0, 60 * ms, Serve}, {90, 60 * ms, Serve}, {95, 40 * ms, Serve},
			{100, 60 * ms, Serve}, {190, 60 * ms, Serve}, {199, 60 * ms, Serve},
			{200, 60 * ms, Shed}, // 100 ms past the target since t=100
		})
	})
}

// TestShedderStandingQueue: once the oldest wait has stayed past the
// target for an interval, exactly the connections past the target are
// shed, those within it served; the queue stands until an interval passes
// with no wait past the target.
func TestShedderStandingQueue(t *testing.T) {
	s := NewShedder(Overload{Target: 50 * ms, Interval: 100 * ms})
	run(t, s, []step{
		{0, 51 * ms, Serve},   // first past the target
		{99, 80 * ms, Serve},  // not yet an interval
		{100, 80 * ms, Shed},  // an interval past it: standing
		{100, 70 * ms, Shed},  // past the target: shed
		{100, 50 * ms, Serve}, // at the target: served
		{120, 10 * ms, Serve},
		{130, 51 * ms, Shed}, // still standing: one past the target
		{229, 49 * ms, Serve},
	})
	if !s.Standing(at(229)) {
		t.Error("not standing 99 ms after the last wait past the target")
	}
	if s.Standing(at(230)) {
		t.Error("standing an interval after the last wait past the target")
	}
	// Over: a wait past the target starts a new interval, as at first.
	run(t, s, []step{{230, 200 * ms, Serve}, {329, 200 * ms, Serve}, {330, 200 * ms, Shed}})
}

// TestShedderExpiresWhenIdle: a queue that stood stops standing after an
// interval without any connection taken, so that the first connection of
// a later burst is served.
func TestShedderExpiresWhenIdle(t *testing.T) {
	s := NewShedder(Overload{Target: 50 * ms})
	run(t, s, []step{{0, 60 * ms, Serve}, {50, 60 * ms, Serve}, {100, 60 * ms, Shed}})
	run(t, s, []step{{5000, 60 * ms, Serve}})
	// A forming queue too: two waits past the target an interval apart,
	// with none between, are two bursts.
	run(t, s, []step{{5100, 60 * ms, Serve}})
}

// TestShedderLIFO: with LIFO, newest first from the first wait past the
// target (a forming queue) until the queue no longer stands.
func TestShedderLIFO(t *testing.T) {
	s := NewShedder(Overload{Target: 50 * ms, Interval: 100 * ms, LIFO: true})
	if s.LIFO(at(0)) {
		t.Error("newest first before any wait")
	}
	s.Decide(at(0), 10*ms)
	if s.LIFO(at(0)) {
		t.Error("newest first with waits within the target")
	}
	s.Decide(at(10), 60*ms)
	if !s.LIFO(at(10)) {
		t.Error("oldest first while a queue forms")
	}
	s.Decide(at(60), 60*ms)
	s.Decide(at(110), 60*ms) // standing
	s.Decide(at(120), 10*ms) // a fresh one served; still standing
	if !s.LIFO(at(150)) {
		t.Error("oldest first while the queue stands")
	}
	if s.LIFO(at(210)) {
		t.Error("newest first an interval after the last wait past the target")
	}
	if NewShedder(Overload{Target: 50 * ms}).LIFO(at(0)) {
		t.Error("newest first without LIFO")
	}
}

// TestShedderBacklog: with SizeBacklog, while the queue stands, the
// backlog is the accept rate of the last interval times the target,
// rounded up, never above what the application asked for; it is restored
// once the queue no longer stands.
func TestShedderBacklog(t *testing.T) {
	s := NewShedder(Overload{Target: 50 * ms, Interval: 100 * ms, SizeBacklog: true})
	// One served every 2.5 ms (400 a second), the oldest waiting past the
	// target from t=100.
	serve := func(from, to int) {
		for t4 := from * 4; t4 < to*4; t4 += 10 {
			now := at(0).Add(time.Duration(t4) * time.Millisecond / 4)
			wait := 10 * ms
			if t4 >= 400 {
				wait = 60 * ms
			}
			if s.Decide(now, wait) == Serve {
				s.Served(now)
			}
		}
	}
	serve(0, 150)
	if _, change := s.Backlog(at(150), 512); change {
		t.Error("sized while the queue only forms")
	}
	serve(150, 250) // standing from t=200
	n, change := s.Backlog(at(250), 512)
	if !change || n != 20 {
		t.Errorf("Backlog at 400/s and a 50 ms target = %d, %v; want 20, true", n, change)
	}
	if _, change := s.Backlog(at(251), 512); change {
		t.Error("sized again to the same value")
	}
	if sized, to := s.Sized(); !sized || to != 20 {
		t.Errorf("Sized() = %v, %d; want true, 20", sized, to)
	}
	// Never above the application's.
	s2 := *s
	s2.sized = false
	if n, _ := s2.Backlog(at(251), 8); n != 8 {
		t.Errorf("sized to %d above the requested 8", n)
	}
	// An interval without a wait past the target: restored.
	n, change = s.Backlog(at(350), 512)
	if !change || n != 512 {
		t.Errorf("Backlog after the queue stood = %d, %v; want 512, true", n, change)
	}
	if sized, _ := s.Sized(); sized {
		t.Error("still sized after the restore")
	}
	if _, change := s.Backlog(at(351), 512); change {
		t.Error("restored twice")
	}
	// A negative request ("the maximum") bounds nothing; an application
	// that serves nothing gets a backlog of 1.
	s3 := NewShedder(Overload{Target: time.Second, SizeBacklog: true})
	for i := range 100 {
		s3.Decide(at(i), 0)
		s3.Served(at(i))
	}
	for i := 100; i < 200; i++ {
		s3.Decide(at(i), 2*time.Second)
		s3.Served(at(i))
	}
	s3.Decide(at(200), 2*time.Second)
	if n, change := s3.Backlog(at(200), -1); !change || n != 1000 {
		t.Errorf("Backlog(-1) at 1000/s and a 1 s target = %d, %v; want 1000, true", n, change)
	}
	for i := 210; i <= 300; i += 10 {
		s3.Decide(at(i), 2*time.Second)
	}
	if n, change := s3.Backlog(at(300), -1); !change || n != 1 {
		t.Errorf("Backlog(-1) with nothing served for an interval = %d, %v; want 1, true", n, change)
	}
}

func TestOverloadValidateAndParse(t *testing.T) {
	for _, o := range []Overload{{Target: -1}, {Target: ms, Interval: -1}, {LIFO: true}, {Interval: ms}, {SizeBacklog: true}} {
		if err := o.Validate(); !errors.Is(err, ErrOverload) {
			t.Errorf("%+v: Validate() = %v; want an ErrOverload", o, err)
		}
	}
	if err := (Overload{}).Validate(); err != nil {
		t.Errorf("the zero value: %v", err)
	}
	for _, c := range []struct {
		in   string
		want Overload
	}{
		{"none", Overload{}},
		{"50ms", Overload{Target: 50 * ms}},
		{"codel target=50ms interval=100ms lifo sized-backlog", Overload{Target: 50 * ms, Interval: 100 * ms, LIFO: true, SizeBacklog: true}},
		{"target=5ms,lifo", Overload{Target: 5 * ms, LIFO: true}},
	} {
		got, err := ParseOverload(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseOverload(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
		if back, err := ParseOverload(got.String()); err != nil || back.Enabled() != got.Enabled() || back.Target != got.Target || back.LIFO != got.LIFO || back.SizeBacklog != got.SizeBacklog {
			t.Errorf("ParseOverload(%q.String() = %q) = %+v, %v", c.in, got.String(), back, err)
		}
	}
	for _, in := range []string{"lifo", "target=x", "speed=3", "target=-5ms", "fast"} {
		if _, err := ParseOverload(in); !errors.Is(err, ErrOverload) {
			t.Errorf("ParseOverload(%q) = %v; want an ErrOverload", in, err)
		}
	}
}

// FuzzShedder drives a Shedder with arbitrary waits and gaps and checks
// the rules a caller relies on: nothing within the target is ever shed;
// nothing is shed before a wait past the target was seen an interval
// earlier; and after an interval with no wait past the target, the next
// one is served, as at first.
func FuzzShedder(f *testing.F) {
	f.Add([]byte{10, 60, 10, 60, 200, 60, 5, 10})
	f.Add([]byte{0, 255, 1, 255, 100, 255, 100, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		o := Overload{Target: 50 * ms, Interval: 100 * ms}
		s := NewShedder(o)
		now := at(0)
		var firstAbove, lastAbove time.Time
		for i := 0; i+1 < len(b); i += 2 {
			now = now.Add(time.Duration(b[i]) * ms)
			wait := time.Duration(b[i+1]) * 2 * ms
			v := s.Decide(now, wait)
			switch {
			case v == Shed && wait <= o.Target:
				t.Fatalf("shed a connection that waited %v, within the target", wait)
			case v == Shed && (firstAbove.IsZero() || now.Sub(firstAbove) < o.Interval):
				t.Fatalf("shed at %v with the first wait past the target at %v", now, firstAbove)
			case v == Shed && now.Sub(lastAbove) >= o.Interval:
				t.Fatalf("shed at %v, an interval after the last wait past the target (%v)", now, lastAbove)
			}
			if wait > o.Target {
				if firstAbove.IsZero() {
					firstAbove = now
				}
				lastAbove = now
			}
		}
	})
}
