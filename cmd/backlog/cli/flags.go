package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/internal/lab"
)

// A command's flags: each is declared once, with its value's name and its
// help, and that declaration is the whole of it. The usage a command
// prints is generated from it, every value is checked as it is parsed,
// and every misuse is worded the same way, on one line: the flag, what
// was given, what is accepted.
//
//	backlog serve: --listen "127.0.0.1:99999": the port must be 0-65535
type flags struct {
	cmd   string // "lab"
	synop string // what follows "backlog lab" in the usage line
	about string // paragraphs before the flags, each line under 80 columns
	notes string // paragraphs after them
	fs    *flag.FlagSet
	defs  []*flagDef
}

// A flagDef is one declared flag.
type flagDef struct {
	name  string
	arg   string // the value's name in the usage ("N", "D"); "" for a switch
	help  string
	def   string // the default as the usage shows it; "" for none
	value flag.Value
	given []string // what the command line gave, in order
}

func newFlags(cmd, synop, about string) *flags {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &flags{cmd: cmd, synop: synop, about: about, fs: fs}
}

// add declares a flag: its name, the name of its value in the usage ("" for
// a switch), its help, the default to show ("" for none) and its value.
func (f *flags) add(name, arg, help, def string, v flag.Value) *flagDef {
	d := &flagDef{name: name, arg: arg, help: help, def: def, value: v}
	f.fs.Var(v, name, help)
	f.defs = append(f.defs, d)
	return d
}

// given reports whether the command line gave the flag.
func (f *flags) given(name string) bool {
	for _, d := range f.defs {
		if d.name == name {
			return len(d.given) > 0
		}
	}
	return false
}

// invalid is a misuse of one flag found after parsing, worded as the
// parser words its own: the flag, what was given, what is accepted.
func (f *flags) invalid(name, accepted string) error {
	for _, d := range f.defs {
		if d.name == name && len(d.given) > 0 {
			return usagef(f.cmd, "--%s %q: %s", name, d.given[len(d.given)-1], accepted)
		}
	}
	return usagef(f.cmd, "--%s: %s", name, accepted)
}

var negativeNumber = regexp.MustCompile(`^-[0-9]+$`)

// parse reads args: flags may come before, between or after positional
// arguments, as --name value, --name=value or with one dash; a negative
// number ("-1") is a positional argument, since a backlog may be one, and
// "--" ends the flags. -h or --help prints the usage to stdout and returns
// flag.ErrHelp. It returns the positional arguments.
func (f *flags) parse(e *env, args []string) ([]string, error) {
	var positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return append(positional, args[i+1:]...), nil
		case a == "-" || !strings.HasPrefix(a, "-") || negativeNumber.MatchString(a):
			positional = append(positional, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		if name == "" || strings.HasPrefix(name, "-") {
			return nil, usagef(f.cmd, "%q: a flag is -name or --name", a)
		}
		if name == "h" || name == "help" {
			f.usage(e.stdout)
			return nil, flag.ErrHelp
		}
		d := f.lookup(name)
		if d == nil {
			return nil, usagef(f.cmd, "--%s: no such flag; %s takes %s", name, f.cmd, f.names())
		}
		if !hasValue {
			if d.arg == "" {
				value = "true"
			} else if i+1 < len(args) {
				i++
				value = args[i]
			} else {
				return nil, usagef(f.cmd, "--%s needs a value: --%s %s", name, name, d.arg)
			}
		}
		if err := d.value.Set(value); err != nil {
			return nil, usagef(f.cmd, "--%s %q: %v", name, value, err)
		}
		d.given = append(d.given, value)
	}
	return positional, nil
}

func (f *flags) lookup(name string) *flagDef {
	for _, d := range f.defs {
		if d.name == name {
			return d
		}
	}
	return nil
}

func (f *flags) names() string {
	names := make([]string, len(f.defs))
	for i, d := range f.defs {
		names[i] = "--" + d.name
	}
	if len(names) == 0 {
		return "no flags"
	}
	return strings.Join(names, ", ")
}

// usage writes the command's usage, generated from its flags, fitted to 80
// columns.
func (f *flags) usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: backlog %s %s\n", f.cmd, f.synop)
	if f.about != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(f.about))
	}
	if len(f.defs) > 0 {
		fmt.Fprintln(w, "\nFlags:")
		col := 0
		for _, d := range f.defs {
			col = max(col, len(d.lead()))
		}
		col = min(col+4, 28)
		for _, d := range f.defs {
			help := d.help
			if d.def != "" {
				help += " (default " + d.def + ")"
			}
			lines := wrap(help, usageWidth-col)
			lead := "  " + d.lead()
			if len(lead)+2 > col {
				// A long name: its help starts on the next line.
				fmt.Fprintln(w, lead)
				lead = ""
			}
			for _, l := range lines {
				fmt.Fprintf(w, "%-*s%s\n", col, lead, l)
				lead = ""
			}
		}
	}
	if f.notes != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(f.notes))
	}
}

// usageWidth is the width usage and help text are fitted to.
const usageWidth = 80

func (d *flagDef) lead() string {
	if d.arg == "" {
		return "--" + d.name
	}
	return "--" + d.name + " " + d.arg
}

// wrap breaks text into lines of at most width runes, at spaces; a word
// longer than width is broken after a hyphen, colon, comma or slash in it
// where it can be, and anywhere where it cannot.
func wrap(text string, width int) []string {
	width = max(width, 1)
	var lines []string
	var line strings.Builder
	for _, word := range strings.Fields(text) {
		for i, piece := range breakWord(word, width) {
			if line.Len() > 0 && (i > 0 || runeLen(line.String())+1+runeLen(piece) > width) {
				lines = append(lines, line.String())
				line.Reset()
			}
			if line.Len() > 0 {
				line.WriteByte(' ')
			}
			line.WriteString(piece)
		}
	}
	if line.Len() > 0 || len(lines) == 0 {
		lines = append(lines, line.String())
	}
	return lines
}

// breakWord cuts a word longer than width into pieces no longer than it,
// each ending at a hyphen, colon, comma or slash where one is in reach.
func breakWord(word string, width int) []string {
	var pieces []string
	r := []rune(word)
	for len(r) > width {
		cut := width
		for i := width - 1; i > 0; i-- {
			if strings.ContainsRune("-:,/", r[i-1]) {
				cut = i
				break
			}
		}
		pieces = append(pieces, string(r[:cut]))
		r = r[cut:]
	}
	return append(pieces, string(r))
}

// The values flags take. Each Set returns, on a bad value, what is
// accepted; the parser puts the flag and the value before it.

// switchValue is a flag without a value: --json.
type switchValue struct{ p *bool }

func (v switchValue) String() string { return strconv.FormatBool(v.p != nil && *v.p) }
func (v switchValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("give true or false, or the flag alone")
	}
	*v.p = b
	return nil
}

func (f *flags) switchFlag(p *bool, name, help string) {
	f.add(name, "", help, "", switchValue{p})
}

// intValue is an integer within bounds.
type intValue struct {
	p        *int
	min, max int
	what     string // what a value is, for the message: "clients"
}

func (v intValue) String() string { return strconv.Itoa(*v.p) }
func (v intValue) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < int64(v.min) || n > int64(v.max) {
		return fmt.Errorf("give %s from %d to %d", v.what, v.min, v.max)
	}
	*v.p = int(n)
	return nil
}

func (f *flags) intFlag(p *int, name, arg, help string, def, lo, hi int, what string) {
	*p = def
	f.add(name, arg, help, strconv.Itoa(def), intValue{p, lo, hi, what})
}

// durationValue is a duration within bounds, with a unit.
type durationValue struct {
	p        *time.Duration
	min, max time.Duration
}

func (v durationValue) String() string { return v.p.String() }
func (v durationValue) Set(s string) error {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if _, nerr := strconv.ParseFloat(strings.TrimSpace(s), 64); err != nil && nerr == nil {
		return fmt.Errorf("a duration needs a unit, such as %sms or %ss (units: ns, us, ms, s, m, h)", s, s)
	}
	if err != nil {
		return errors.New("give a duration such as 300ms, 5s or 1m (units: ns, us, ms, s, m, h)")
	}
	if d < v.min || d > v.max {
		return fmt.Errorf("give a duration from %s to %s", durationText(v.min), durationText(v.max))
	}
	*v.p = d
	return nil
}

// durationText prints a duration the way a user would type it: 10m, not
// 10m0s.
func durationText(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func (f *flags) durationFlag(p *time.Duration, name, help string, def, lo, hi time.Duration) {
	*p = def
	f.add(name, "D", help, durationText(def), durationValue{p, lo, hi})
}

// choiceValue is one of a few words.
type choiceValue struct {
	p       *string
	choices []string
}

func (v choiceValue) String() string { return *v.p }
func (v choiceValue) Set(s string) error {
	for _, c := range v.choices {
		if strings.EqualFold(s, c) {
			*v.p = c
			return nil
		}
	}
	return fmt.Errorf("give %s", orList(v.choices))
}

func (f *flags) choiceFlag(p *string, name, arg, help, def string, choices ...string) {
	*p = def
	f.add(name, arg, help, def, choiceValue{p, choices})
}

// orList joins words as "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// addrValue is an address to listen on or connect to: HOST:PORT, where
// HOST may be empty (every address) when listening.
type addrValue struct {
	p       *string
	example string
	listen  bool // HOST may be empty and PORT 0 (a free port)
}

func (v addrValue) String() string { return *v.p }
func (v addrValue) Set(s string) error {
	if err := checkAddr(s, v.listen); err != nil {
		return fmt.Errorf("%v, such as %s", err, v.example)
	}
	*v.p = s
	return nil
}

// checkAddr checks the shape of HOST:PORT and the port's range.
func checkAddr(s string, listen bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if listen {
			return errors.New("give HOST:PORT or :PORT")
		}
		return errors.New("give HOST:PORT")
	}
	lo := 1
	if listen {
		lo = 0
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < lo || n > 65535 {
		if listen {
			return errors.New("the port must be 0-65535 (0: any free port)")
		}
		return errors.New("the port must be 1-65535")
	}
	switch {
	case host == "" && !listen:
		return errors.New("give a host before the port")
	case strings.ContainsAny(host, " \t/"):
		return errors.New("the host must be an IP address or a name")
	}
	return nil
}

func (f *flags) addrFlag(p *string, name, arg, help, def, example string, listen bool) {
	*p = def
	f.add(name, arg, help, def, addrValue{p, example, listen})
}

// backlogValue is a backlog as explain reads one: an integer (negative
// too), SOMAXCONN, or SOMAXCONN_HINT(N).
type backlogValue struct{ p *request }

func (v backlogValue) String() string { return v.p.String() }
func (v backlogValue) Set(s string) error {
	r, err := parseBacklog(s)
	if err != nil {
		return err
	}
	*v.p = r
	return nil
}

func (f *flags) backlogFlag(p *request, name, help string, def int) {
	*p = request{n: def}
	f.add(name, "N", help, strconv.Itoa(def), backlogValue{p})
}

// backlogListValue is a repeatable backlog.
type backlogListValue struct{ p *[]request }

func (v backlogListValue) String() string { return fmt.Sprint(*v.p) }
func (v backlogListValue) Set(s string) error {
	r, err := parseBacklog(s)
	if err != nil {
		return err
	}
	*v.p = append(*v.p, r)
	return nil
}

var hintArg = regexp.MustCompile(`^(?i)SOMAXCONN_HINT\(([0-9]+)\)$`)

// parseBacklog reads an integer that fits listen()'s int, SOMAXCONN (the
// personality's own value) or SOMAXCONN_HINT(N) (Windows: -N).
func parseBacklog(s string) (request, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "SOMAXCONN") {
		return request{somaxconn: true}, nil
	}
	if m := hintArg.FindStringSubmatch(s); m != nil {
		if n, err := strconv.Atoi(m[1]); err == nil && n <= math.MaxInt32 {
			return request{n: backlog.SomaxconnHint(n)}, nil
		}
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return request{}, fmt.Errorf("give an integer from %d to %d, SOMAXCONN or SOMAXCONN_HINT(N)", math.MinInt32, math.MaxInt32)
	}
	return request{n: int(n)}, nil
}

// acceptValue is the application's pace: none, max, or a rate.
type acceptValue struct{ p *lab.AcceptPolicy }

func (v acceptValue) String() string { return v.p.String() }
func (v acceptValue) Set(s string) error {
	after := v.p.After
	switch s {
	case "none":
		*v.p = lab.AcceptPolicy{Never: true}
	case "max":
		*v.p = lab.AcceptPolicy{}
	default:
		n, ok := strings.CutSuffix(s, "/s")
		r, err := strconv.ParseFloat(n, 64)
		if !ok || err != nil || !(r > 0 && r <= 1e6) {
			return errors.New("give none, max, or a rate from 0 to 1000000 a second, such as 10/s")
		}
		*v.p = lab.AcceptPolicy{Rate: r}
	}
	v.p.After = after
	return nil
}

// acceptAfterValue is --accept-after, kept in the same policy.
type acceptAfterValue struct{ p *lab.AcceptPolicy }

func (v acceptAfterValue) String() string { return v.p.After.String() }
func (v acceptAfterValue) Set(s string) error {
	d := v.p.After
	if err := (durationValue{&d, 0, time.Hour}).Set(s); err != nil {
		return err
	}
	v.p.After = d
	return nil
}

func (f *flags) acceptFlags(p *lab.AcceptPolicy, def string) {
	if err := (acceptValue{p}).Set(def); err != nil {
		panic(err)
	}
	f.add("accept", "PACE", "how the application accepts: none, max (as fast as connections come) or a rate such as 10/s", def, acceptValue{p})
	f.add("accept-after", "D", "the application's first accept waits D", "", acceptAfterValue{p})
}

// relistenValue is --relisten D:N, repeatable.
type relistenValue struct{ p *[]lab.Relisten }

func (v relistenValue) String() string { return fmt.Sprint(*v.p) }
func (v relistenValue) Set(s string) error {
	d, n, ok := strings.Cut(s, ":")
	after, err := time.ParseDuration(d)
	if !ok || err != nil || after <= 0 || after > time.Hour {
		return errors.New("give D:N, a time after the start (up to 1h) and a backlog, such as 2s:1")
	}
	b, err := strconv.ParseInt(n, 10, 32)
	if err != nil {
		return fmt.Errorf("the backlog %q is not an integer; give D:N, such as 2s:1", n)
	}
	*v.p = append(*v.p, lab.Relisten{After: after, Backlog: int(b)})
	return nil
}

func (f *flags) relistenFlag(p *[]lab.Relisten) {
	f.add("relisten", "D:N", "call listen(N) again D after the start, such as 2s:1 (repeatable)", "", relistenValue{p})
}

// personalityValue is --personality, repeatable: names (with
// parameters) or "all", each looked up as it is given, kept once each.
type personalityValue struct {
	p   *[]backlog.Personality
	one bool // a single system, not all
}

func (v personalityValue) String() string { return fmt.Sprint(*v.p) }
func (v personalityValue) Set(s string) error {
	ps, err := lookupPersonalities(s)
	if err != nil {
		return err
	}
	if v.one {
		if len(ps) != 1 {
			return errors.New("give one system, not all")
		}
		*v.p = nil
	}
	for _, p := range ps {
		if !containsPersonality(*v.p, p) {
			*v.p = append(*v.p, p)
		}
	}
	return nil
}

func containsPersonality(ps []backlog.Personality, p backlog.Personality) bool {
	for _, q := range ps {
		if q.String() == p.String() {
			return true
		}
	}
	return false
}

func (f *flags) personalityFlag(p *[]backlog.Personality, help, def string, one bool) {
	f.add("personality", "NAME", help, def, personalityValue{p, one})
}

// tunValue is a TUN device's name as Linux accepts one (net/core/dev.c
// dev_valid_name): 1 to 15 bytes (IFNAMSIZ less its NUL), not "." or
// "..", without "/", ":" or white space.
type tunValue struct{ p *string }

func (v tunValue) String() string { return *v.p }
func (v tunValue) Set(s string) error {
	switch {
	case s == "" || len(s) > 15:
		return fmt.Errorf("a device name has 1 to 15 characters (IFNAMSIZ is 16 with its NUL); this has %d", len(s))
	case s == "." || s == ".." || strings.ContainsAny(s, "/: \t\n"):
		return errors.New(`a device name cannot be "." or "..", nor hold "/", ":" or spaces`)
	}
	*v.p = s
	return nil
}

// prefixValue is the user-space host's IPv4 address with its prefix: a
// host address (neither the network's own address nor its broadcast one)
// in a prefix that leaves room for the kernel's side.
type prefixValue struct{ p *netip.Prefix }

func (v prefixValue) String() string {
	if !v.p.IsValid() {
		return ""
	}
	return v.p.String()
}

func (v prefixValue) Set(s string) error {
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil || !p.Addr().Is4():
		return errors.New("give an IPv4 address with its prefix length, such as 198.18.0.2/15")
	case p.Bits() == 0:
		return errors.New("a /0 prefix takes in every address; give one such as /15 or /24")
	case p.Bits() > 30:
		return fmt.Errorf("a /%d prefix has no room for two hosts; give /30 or shorter", p.Bits())
	case p.Addr().IsLoopback() || p.Addr().IsMulticast() || p.Addr().IsUnspecified():
		return errors.New("the address must be a unicast host address, such as 198.18.0.2/15")
	case p.Addr() == p.Masked().Addr():
		return fmt.Errorf("%s is the network's own address; give a host address, such as %s/%d", p.Addr(), p.Masked().Addr().Next(), p.Bits())
	case p.Addr() == broadcast(p):
		return fmt.Errorf("%s is the prefix's broadcast address; give a host address", p.Addr())
	}
	*v.p = p
	return nil
}

// broadcast is the last address of an IPv4 prefix.
func broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// portListValue is a repeatable port.
type portListValue struct{ p *[]uint16 }

func (v portListValue) String() string { return fmt.Sprint(*v.p) }
func (v portListValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return errors.New("give a port from 1 to 65535")
	}
	*v.p = append(*v.p, uint16(n))
	return nil
}

// stringListValue is a repeatable string.
type stringListValue struct{ p *[]string }

func (v stringListValue) String() string { return strings.Join(*v.p, " ") }
func (v stringListValue) Set(s string) error {
	if s == "" {
		return errors.New("give a name")
	}
	*v.p = append(*v.p, s)
	return nil
}

// pathValue is a file to write.
type pathValue struct{ p *string }

func (v pathValue) String() string { return *v.p }
func (v pathValue) Set(s string) error {
	if s == "" {
		return errors.New("give a file name")
	}
	*v.p = s
	return nil
}

// onlyFlags fails when a command that takes only flags got an argument.
func (f *flags) onlyFlags(rest []string) error {
	if len(rest) > 0 {
		return usagef(f.cmd, "unexpected argument %q; %s takes only flags (backlog help %s)", rest[0], f.cmd, f.cmd)
	}
	return nil
}
