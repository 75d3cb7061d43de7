package backlog

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// A param is one name=value setting a personality accepts in Lookup.
type param struct {
	name string
	doc  string
	// set parses value into the configuration behind the personality.
	set func(value string) error
}

// entry is one personality in the registry: how to build it from its
// parameters.
type entry struct {
	name   string
	params func() (list []param, build func() (Personality, error))
}

// noParams is the entry builder of a personality without parameters.
func noParams(f func() Personality) func() ([]param, func() (Personality, error)) {
	return func() ([]param, func() (Personality, error)) {
		return nil, func() (Personality, error) { return f(), nil }
	}
}

// registry lists every personality, in the order All returns them: the seed
// systems first, then current ones.
var registry = []entry{
	{"winsock1.1", noParams(Winsock11)},
	{"winnt3.5", noParams(WinNT35)},
	{"winnt4-workstation", noParams(WinNT4Workstation)},
	{"winnt4-server", noParams(WinNT4Server)},
	{"wince", noParams(WinCE)},
	{"irsock", noParams(IrSock)},
	{"win2000-sp1-wsd", noParams(Win2000SP1WSD)},
	{"wsp", noParams(WSP)},
	{"windows", noParams(Windows)},
	{"bsd4.3", noParams(BSD43)},
	{"freebsd", freebsdParams},
	{"darwin", darwinParams},
	{"linux", linuxParams},
	{"gvisor", noParams(GVisor)},
	{"lwip", noParams(LwIP)},
}

func intParam(name, doc string, dst *int, lo, hi int) param {
	return param{name: name, doc: doc, set: func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			return fmt.Errorf("%s must be an integer from %d to %d, not %q", name, lo, hi, v)
		}
		*dst = n
		return nil
	}}
}

func boolParam(name, doc string, dst *bool) param {
	return param{name: name, doc: doc, set: func(v string) error {
		switch v {
		case "1", "true", "on", "yes":
			*dst = true
		case "0", "false", "off", "no":
			*dst = false
		default:
			return fmt.Errorf("%s must be 0 or 1, not %q", name, v)
		}
		return nil
	}}
}

const maxInt32 = 1<<31 - 1

func linuxParams() ([]param, func() (Personality, error)) {
	c := DefaultLinuxConfig()
	return []param{
			intParam("somaxconn", "net.core.somaxconn (4096; 128 before Linux 5.4)", &c.Somaxconn, 0, maxInt32),
			intParam("syncookies", "net.ipv4.tcp_syncookies: 0, 1 or 2 (1)", &c.SynCookies, 0, 2),
			boolParam("abort_on_overflow", "net.ipv4.tcp_abort_on_overflow (0)", &c.AbortOnOverflow),
			intParam("max_syn_backlog", "net.ipv4.tcp_max_syn_backlog (2048)", &c.MaxSynBacklog, 1, maxInt32),
			intParam("syn_retries", "net.ipv4.tcp_syn_retries (6)", &c.SynRetries, 1, 127),
			intParam("syn_linear_timeouts", "net.ipv4.tcp_syn_linear_timeouts (4; 0 before Linux 6.5)", &c.SynLinearTimeouts, 0, 127),
			intParam("synack_retries", "net.ipv4.tcp_synack_retries (5)", &c.SynAckRetries, 1, 127),
		}, func() (Personality, error) {
			return Linux(c), nil
		}
}

func freebsdParams() ([]param, func() (Personality, error)) {
	c := FreeBSDConfig{Somaxconn: 128}
	return []param{
			intParam("somaxconn", "kern.ipc.soacceptqueue (128)", &c.Somaxconn, 0, 65535),
		}, func() (Personality, error) {
			return FreeBSD(c), nil
		}
}

func darwinParams() ([]param, func() (Personality, error)) {
	c := DarwinConfig{Somaxconn: 128}
	return []param{
			intParam("somaxconn", "kern.ipc.somaxconn (128; stored in a short)", &c.Somaxconn, 1, 32767),
		}, func() (Personality, error) {
			return Darwin(c), nil
		}
}

// aliases of whole configurations: a name that stands for a personality with
// parameters.
var presets = map[string]string{
	"linux-pre5.4":   "linux:somaxconn=128,syn_linear_timeouts=0",
	"linux-4":        "linux:somaxconn=128,syn_linear_timeouts=0",
	"linux-2.2":      "linux:somaxconn=128,syn_linear_timeouts=0",
	"linux-nocookie": "linux:syncookies=0",
}

// ErrUnknownPersonality is returned, wrapped, by Lookup for a name that
// names no personality.
var ErrUnknownPersonality = errors.New("unknown personality")

// Names returns the canonical name of every personality, in the order of All.
func Names() []string {
	names := make([]string, len(registry))
	for i, e := range registry {
		names[i] = e.name
	}
	return names
}

// All returns every personality with its default parameters: the systems of
// the seed documents first, then current ones.
func All() []Personality {
	all := make([]Personality, 0, len(registry))
	for _, e := range registry {
		_, build := e.params()
		p, _ := build()
		all = append(all, p)
	}
	return all
}

// Lookup returns the personality a name stands for. Names are matched
// without regard to case and may be aliases ("macos", "kb295079",
// "nt4w"). Parameters follow a colon, separated by commas:
// "linux:somaxconn=128,syncookies=0", "freebsd:somaxconn=4096".
//
// An unknown name gives an error that wraps ErrUnknownPersonality and lists
// the valid names; an unknown or invalid parameter gives an error that lists
// the valid ones.
func Lookup(name string) (Personality, error) {
	spec := strings.ToLower(strings.TrimSpace(name))
	base, args, _ := strings.Cut(spec, ":")
	if preset, ok := presets[base]; ok {
		pbase, pargs, _ := strings.Cut(preset, ":")
		base = pbase
		if args == "" {
			args = pargs
		} else {
			args = pargs + "," + args
		}
	}
	e, ok := find(base)
	if !ok {
		return Personality{}, fmt.Errorf("%w %q; valid: %s", ErrUnknownPersonality, name, strings.Join(Names(), ", "))
	}
	params, build := e.params()
	var canon []string
	if args != "" {
		for _, kv := range strings.Split(args, ",") {
			k, v, _ := strings.Cut(kv, "=")
			k = strings.TrimSpace(k)
			i := slices.IndexFunc(params, func(p param) bool { return p.name == k })
			if i < 0 {
				return Personality{}, fmt.Errorf("personality %s has no parameter %q; %s", e.name, k, paramList(params))
			}
			if err := params[i].set(strings.TrimSpace(v)); err != nil {
				return Personality{}, fmt.Errorf("personality %s: %v", e.name, err)
			}
			canon = append(canon, k+"="+strings.TrimSpace(v))
		}
	}
	p, err := build()
	if err != nil {
		return Personality{}, err
	}
	p.Params = strings.Join(canon, ",")
	return p, nil
}

// MustLookup is Lookup for names known to be valid; it panics otherwise.
func MustLookup(name string) Personality {
	p, err := Lookup(name)
	if err != nil {
		panic(err)
	}
	return p
}

func find(name string) (entry, bool) {
	for _, e := range registry {
		if e.name == name {
			return e, true
		}
	}
	for _, e := range registry {
		_, build := e.params()
		p, _ := build()
		if slices.Contains(p.Aliases, name) {
			return e, true
		}
	}
	return entry{}, false
}

func paramList(params []param) string {
	if len(params) == 0 {
		return "it takes none"
	}
	names := make([]string, len(params))
	for i, p := range params {
		names[i] = p.name
	}
	return "valid: " + strings.Join(names, ", ")
}

// Params describes the parameters the named personality accepts, one
// "name: meaning" line each, or nil when it takes none.
func Params(name string) []string {
	e, ok := find(strings.ToLower(name))
	if !ok {
		return nil
	}
	params, _ := e.params()
	var out []string
	for _, p := range params {
		out = append(out, p.name+": "+p.doc)
	}
	return out
}

// Host returns the personality of the operating system this program was
// built for, with default parameters: windows, darwin (also for iOS),
// freebsd, and Linux's rules for every other system, as a default rather than
// a claim about it. The kernel package reads the running host's actual
// settings.
func Host() Personality {
	switch runtime.GOOS {
	case "windows":
		return Windows()
	case "darwin", "ios":
		return Darwin(DarwinConfig{Somaxconn: 128})
	case "freebsd":
		return FreeBSD(FreeBSDConfig{Somaxconn: 128})
	}
	return Linux(DefaultLinuxConfig())
}
