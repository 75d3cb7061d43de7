package backlog

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestStoredAndCapacity checks every personality against SPEC.md for the
// requests that tell the clamps apart.
func TestStoredAndCapacity(t *testing.T) {
	type want struct{ stored, capacity int }
	tests := []struct {
		name string
		// requested backlog → want
		cases map[int]want
	}{
		{"winsock1.1", map[int]want{-1: {1, 1}, 0: {1, 1}, 1: {1, 1}, 5: {5, 5}, 6: {5, 5}, 300: {5, 5}}},
		{"winnt3.5", map[int]want{0: {1, 1}, 100: {100, 100}, 101: {100, 100}, 300: {100, 100}}},
		{"winnt4-workstation", map[int]want{0: {1, 1}, 5: {5, 5}, 300: {5, 5}}},
		{"winnt4-server", map[int]want{0: {1, 1}, 200: {200, 200}, 300: {200, 200}}},
		{"wince", map[int]want{-7: {1, 1}, 0: {1, 1}, 3: {3, 3}, 6: {5, 5}, 300: {5, 5}}},
		{"irsock", map[int]want{-1: {2, 2}, 0: {2, 2}, 1: {2, 2}, 2: {2, 2}, 300: {2, 2}}},
		{"win2000-sp1-wsd", map[int]want{0: {1, 1}, 300: {200, 200}}},
		{"wsp", map[int]want{0: {1, 1}, 300: {200, 200}}},
		{"windows", map[int]want{
			0: {1, 1}, 5: {5, 5}, 300: {200, 200}, WinsockSOMAXCONN: {200, 200},
			SomaxconnHint(1): {200, 200}, SomaxconnHint(1000): {1000, 1000}, SomaxconnHint(100000): {65535, 65535},
		}},
		{"bsd4.3", map[int]want{-1: {1, 2}, 0: {1, 2}, 1: {1, 2}, 5: {5, 8}, 6: {5, 8}}},
		{"freebsd", map[int]want{-1: {128, 193}, 0: {0, 1}, 1: {1, 2}, 5: {5, 8}, 128: {128, 193}, 300: {128, 193}}},
		{"darwin", map[int]want{-1: {128, 128}, 0: {128, 128}, 1: {1, 1}, 5: {5, 5}, 300: {128, 128}}},
		{"linux", map[int]want{-1: {4096, 4097}, math.MinInt32: {4096, 4097}, 0: {0, 1}, 1: {1, 2}, 5: {5, 6}, 4096: {4096, 4097}, 5000: {4096, 4097}}},
		{"linux:somaxconn=128", map[int]want{-1: {128, 129}, 0: {0, 1}, 5: {5, 6}, 300: {128, 129}}},
		{"gvisor", map[int]want{-1: {1024, 1025}, 0: {0, 1}, 5: {5, 6}, 1024: {1024, 1025}, 4096: {1024, 1025}}},
		{"lwip", map[int]want{-1: {1, 1}, 0: {1, 1}, 5: {5, 5}, 255: {255, 255}, 256: {255, 255}}},
	}
	for _, tt := range tests {
		p := MustLookup(tt.name)
		for req, w := range tt.cases {
			stored, capacity := p.Listen(req)
			if stored != w.stored || capacity != w.capacity {
				t.Errorf("%s: listen(%d) = backlog %d, capacity %d; want %d, %d", tt.name, req, stored, capacity, w.stored, w.capacity)
			}
		}
	}
}

func TestCInt(t *testing.T) {
	for _, tc := range []struct {
		in   int
		want int32
	}{{math.MaxInt, math.MaxInt32}, {math.MinInt, math.MinInt32}, {1<<32 + 3, math.MaxInt32}, {7, 7}, {-1, -1}} {
		if got := CInt(tc.in); got != tc.want {
			t.Errorf("CInt(%d) = %d; want %d", tc.in, got, tc.want)
		}
	}
}

// TestHugeRequestsSaturate checks that Go ints beyond C's int mean "huge",
// never whatever their low 32 bits say.
func TestHugeRequestsSaturate(t *testing.T) {
	for _, p := range All() {
		big := p.Stored(1<<32 + 5)
		if want := p.Stored(math.MaxInt32); big != want {
			t.Errorf("%s: listen(1<<32+5) = %d; want %d, as for MaxInt32", p.Name, big, want)
		}
		if got, want := p.Stored(math.MinInt64), p.Stored(math.MinInt32); got != want {
			t.Errorf("%s: listen(MinInt64) = %d; want %d, as for MinInt32", p.Name, got, want)
		}
	}
}

func TestEveryPersonalityIsValidAndDocumented(t *testing.T) {
	seen := map[string]string{}
	for _, p := range All() {
		if err := p.Validate(); err != nil {
			t.Error(err)
		}
		if len(p.Sources) == 0 || p.System == "" {
			t.Errorf("%s: no System or Sources", p.Name)
		}
		if len(p.ClientSYN.At) == 0 || p.ClientSYN.GiveUp <= p.ClientSYN.At[len(p.ClientSYN.At)-1] {
			t.Errorf("%s: client schedule %v gives up before its last retransmission", p.Name, p.ClientSYN)
		}
		if len(p.SYNACK.At) == 0 || p.SYNACK.GiveUp <= p.SYNACK.At[len(p.SYNACK.At)-1] {
			t.Errorf("%s: SYN-ACK schedule %v gives up before its last retransmission", p.Name, p.SYNACK)
		}
		for _, n := range append([]string{p.Name}, p.Aliases...) {
			if other, dup := seen[n]; dup {
				t.Errorf("name %q used by %s and %s", n, other, p.Name)
			}
			seen[n] = p.Name
		}
	}
}

func TestLookup(t *testing.T) {
	tests := []struct{ in, want string }{
		{"linux", "linux"},
		{"LINUX", "linux"},
		{" Linux ", "linux"},
		{"macos", "darwin"},
		{"KB295079", "win2000-sp1-wsd"},
		{"nt4w", "winnt4-workstation"},
		{"4.3bsd", "bsd4.3"},
		{"winnt3.51", "winnt3.5"},
		{"irda", "irsock"},
		{"runsc", "gvisor"},
	}
	for _, tt := range tests {
		p, err := Lookup(tt.in)
		if err != nil || p.Name != tt.want {
			t.Errorf("Lookup(%q) = %q, %v; want %q", tt.in, p.Name, err, tt.want)
		}
	}
}

func TestLookupParams(t *testing.T) {
	p, err := Lookup("linux:somaxconn=128,syncookies=0,abort_on_overflow=1")
	if err != nil {
		t.Fatal(err)
	}
	if p.Maximum() != 128 || p.HalfOpen.OnFull != SYNIgnore || p.OnACKFull != ACKReset {
		t.Errorf("linux params: maximum %d, SYN queue full %v, ACK full %v; want 128, ignore, reset", p.Maximum(), p.HalfOpen.OnFull, p.OnACKFull)
	}
	if got, want := p.String(), "linux:somaxconn=128,syncookies=0,abort_on_overflow=1"; got != want {
		t.Errorf("String() = %q; want %q", got, want)
	}
	if p, _ := Lookup("linux:syncookies=2"); !p.HalfOpen.AlwaysCookie {
		t.Error("linux:syncookies=2 does not always send cookies")
	}
	if p, _ := Lookup("linux-pre5.4"); p.Maximum() != 128 || p.ClientSYN.GiveUp != 127*time.Second {
		t.Errorf("linux-pre5.4: maximum %d, client gives up at %v; want 128, 127s", p.Maximum(), p.ClientSYN.GiveUp)
	}
	if p, _ := Lookup("freebsd:somaxconn=4096"); p.Maximum() != 4096 {
		t.Errorf("freebsd:somaxconn=4096 maximum = %d", p.Maximum())
	}
}

func TestLookupErrorsNameTheChoices(t *testing.T) {
	_, err := Lookup("solaris")
	if !errors.Is(err, ErrUnknownPersonality) {
		t.Fatalf("Lookup(solaris) error %v does not wrap ErrUnknownPersonality", err)
	}
	for _, n := range Names() {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("error %q does not list %s", err, n)
		}
	}
	for _, tt := range []struct{ in, mention string }{
		{"linux:somaxcon=5", "somaxconn"},
		{"linux:syncookies=3", "0 to 2"},
		{"linux:abort_on_overflow=maybe", "0 or 1"},
		{"darwin:somaxconn=40000", "32767"},
		{"winnt3.5:somaxconn=5", "takes none"},
	} {
		_, err := Lookup(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.mention) {
			t.Errorf("Lookup(%q) error = %v; want one mentioning %q", tt.in, err, tt.mention)
		}
	}
}

// TestLinuxClientSchedule checks the SYN retransmission schedule against
// the one measured on Linux 6.18 (retransmits at 1, 2, 3, 4, 5, 7, 11, 19,
// 35.5, 69 s; ETIMEDOUT at 134.6 s, the timer running late) and the
// pre-6.5 one (1, 3, 7, 15, 31, 63; ETIMEDOUT at about 127 s).
func TestLinuxClientSchedule(t *testing.T) {
	s := MustLookup("linux").ClientSYN
	want := []time.Duration{1, 2, 3, 4, 5, 7, 11, 19, 35, 67}
	for i := range want {
		want[i] *= time.Second
	}
	if !slices.Equal(s.At, want) || s.GiveUp != 131*time.Second {
		t.Errorf("linux client schedule = %v; want %v, gives up at 131s", s, want)
	}
	old := MustLookup("linux:syn_linear_timeouts=0").ClientSYN
	if got := old.String(); got != "1s 3s 7s 15s 31s 63s, gives up at 127s" {
		t.Errorf("pre-6.5 schedule = %s", got)
	}
	if got := MustLookup("linux").SYNACK.String(); got != "1s 3s 7s 15s 31s, gives up at 63s" {
		t.Errorf("linux SYN-ACK schedule = %s", got)
	}
}

func TestHost(t *testing.T) {
	p := Host()
	if _, err := Lookup(p.Name); err != nil {
		t.Errorf("Host() = %q, which Lookup does not know: %v", p.Name, err)
	}
}

func TestFullVerdict(t *testing.T) {
	want := map[string]string{
		"winsock1.1": "refuse", "winnt3.5": "refuse", "winnt4-workstation": "refuse",
		"winnt4-server": "refuse", "wince": "refuse", "irsock": "refuse",
		"win2000-sp1-wsd": "refuse", "wsp": "refuse", "windows": "refuse",
		"bsd4.3": "ignore", "freebsd": "refuse", "darwin": "evict",
		"linux": "ignore", "gvisor": "ignore", "lwip": "ignore",
	}
	for _, p := range All() {
		if got := p.FullVerdict(); got != want[p.Name] {
			t.Errorf("%s: FullVerdict() = %q; want %q", p.Name, got, want[p.Name])
		}
	}
}

// TestSYNACKRetries follows reqsk_timer_handler's loop by hand: with the
// defaults (5 retries), nothing changes while at most half of max(8, N)
// requests wait; beyond it, each halving of the young share takes one
// retry off, down to 2. Only Linux prunes.
func TestSYNACKRetries(t *testing.T) {
	linux := MustLookup("linux")
	for _, c := range []struct{ half, young, backlog, want int }{
		{4, 0, 8, 5},      // 8 is not above max(8, 8)
		{4, 0, 5, 5},      // max(8, 5) is 8
		{5, 0, 8, 2},      // above it, and none young: down to the floor
		{6, 6, 8, 5},      // 6 < 12: every one young
		{6, 3, 8, 4},      // 6 >= 6, then 6 < 12
		{6, 1, 8, 3},      // 6 >= 2, 6 >= 4, then 6 < 8
		{9, 3, 8, 4},      // 9 >= 6, then 9 < 12
		{9, 2, 8, 3},      // 9 >= 4, 9 >= 8, then 9 < 16
		{100, 60, 128, 5}, // 200 > 128, but 100 < 120
		{100, 20, 128, 3}, // 100 >= 40, 100 >= 80, then 100 < 160
		{64, 0, 128, 5},   // 128 is not above 128
	} {
		if got := linux.SYNACKRetries(c.half, c.young, c.backlog); got != c.want {
			t.Errorf("linux: %d half-open, %d young, backlog %d: %d retries; want %d", c.half, c.young, c.backlog, got, c.want)
		}
	}
	two, err := Lookup("linux:synack_retries=2")
	if err != nil {
		t.Fatal(err)
	}
	if got := two.SYNACKRetries(100, 0, 8); got != 2 {
		t.Errorf("linux with 2 retries: %d under pressure; want 2, the floor being 2", got)
	}
	for _, p := range All() {
		if p.Name == "linux" {
			continue
		}
		if got, want := p.SYNACKRetries(100, 0, 8), len(p.SYNACK.At); got != want {
			t.Errorf("%s: %d retries under pressure; want its schedule's %d", p.Name, got, want)
		}
	}
}

// TestScheduleStep: the waits between a schedule's transmissions, the last
// being the one before it gives up; past the end, that last one again.
func TestScheduleStep(t *testing.T) {
	s := MustLookup("linux").SYNACK // 1s 3s 7s 15s 31s, gives up at 63s
	var got []time.Duration
	for i := -1; i <= 7; i++ {
		got = append(got, s.Step(i))
	}
	want := []time.Duration{1, 1, 2, 4, 8, 16, 32, 32, 32}
	for i := range want {
		want[i] *= time.Second
	}
	if !slices.Equal(got, want) {
		t.Errorf("Steps -1..7 of %v: %v; want %v", s, got, want)
	}
	if none := (Schedule{GiveUp: 20 * time.Second}); none.Step(0) != 20*time.Second {
		t.Errorf("a schedule without retransmissions: Step(0) = %v; want its 20s", none.Step(0))
	}
}
