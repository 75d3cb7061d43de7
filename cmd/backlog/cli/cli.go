// Package cli implements the backlog command. Run takes the arguments and
// the output streams, so tests drive the whole command in process.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	gvlog "gvisor.dev/gvisor/pkg/log"
)

// A command is one subcommand: its name, a line for the command list, and
// setup, which declares the command's flags and returns them with the
// function that runs the command once they are parsed.
type command struct {
	name  string
	short string
	setup func() (*flags, runFunc)
	// variants are experiments of a command with flags of their own,
	// each chosen by a switch of that name: `lab --overload`.
	variants map[string]func() (*flags, runFunc)
}

// runFunc runs a command with its positional arguments.
type runFunc func(ctx context.Context, e *env, args []string) error

// env carries what every command writes to.
type env struct {
	stdout, stderr io.Writer
}

func commands() []command {
	return []command{
		{name: "lab", short: "watch a listen queue at work: any system's rules, overload", setup: labCommand,
			variants: map[string]func() (*flags, runFunc){"overload": labOverloadCommand}},
		{name: "probe", short: "learn what this host's kernel does with the backlog", setup: probeCommand},
		{name: "top", short: "every listening TCP socket of this host, live", setup: topCommand},
		{name: "exporter", short: "Prometheus metrics for every listen queue of this host", setup: exporterCommand},
		{name: "serve", short: "a real server with the backlog you choose, its queue shown", setup: serveCommand},
		{name: "shape", short: "put a listener of this host under another system's rules at the SYN", setup: shapeCommand},
		{name: "fill", short: "open many connections to an address and see what each meets", setup: fillCommand},
		{name: "explain", short: "what listen(BACKLOG) becomes on each system", setup: explainCommand},
		{name: "personalities", short: "every system's listen() rules", setup: personalitiesCommand},
	}
}

// variant returns the setup of the variant args choose with its switch,
// or the command's own.
func (c command) variant(args []string) func() (*flags, runFunc) {
	for _, a := range args {
		if a == "--" {
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		setup, ok := c.variants[name]
		if !ok || !strings.HasPrefix(a, "-") {
			continue
		}
		if on, err := strconv.ParseBool(value); !hasValue || err == nil && on {
			return setup
		}
	}
	return c.setup
}

// UsageError is a misuse of the command: the command exits with status 2
// and prints the message on one line.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usagef(cmd, format string, args ...any) error {
	prefix := "backlog"
	if cmd != "" {
		prefix += " " + cmd
	}
	return &UsageError{Msg: prefix + ": " + fmt.Sprintf(format, args...)}
}

// Run runs the backlog command with args (without the program name).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	e := &env{stdout: stdout, stderr: stderr}
	cmds := commands()
	names := make([]string, len(cmds))
	for i, c := range cmds {
		names[i] = c.name
	}
	if len(args) == 0 {
		return usagef("", "no command given; commands: %s (try backlog help)", strings.Join(names, ", "))
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		return help(e, cmds, args[1:])
	case "version", "-version", "--version":
		fmt.Fprintln(e.stdout, versionLine())
		return nil
	}
	for _, c := range cmds {
		if c.name == args[0] {
			f, run := c.variant(args[1:])()
			rest, err := f.parse(e, args[1:])
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			if err != nil {
				return err
			}
			return run(ctx, e, rest)
		}
	}
	return usagef("", "unknown command %q; commands: %s", args[0], strings.Join(names, ", "))
}

// Main runs the command and returns its exit status: 0 on success, 2 on
// misuse, 130 when interrupted (a command that reports it was stopped
// has said what it did by then), 1 on any other failure. Errors are
// printed to stderr on one line.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// gVisor logs what its stack could not process to stderr, in the
	// middle of a live view; what matters of it is counted already.
	gvlog.SetTarget(quiet{})
	err := Run(ctx, args, stdout, stderr)
	if err == nil {
		return 0
	}
	if errors.Is(err, errInterrupted) {
		return 130
	}
	var ue *UsageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, ue.Msg)
		return 2
	}
	fmt.Fprintln(stderr, "backlog:", err)
	return 1
}

func help(e *env, cmds []command, args []string) error {
	if len(args) > 0 {
		for _, c := range cmds {
			if c.name == args[0] {
				f, _ := c.variant(args[1:])()
				f.usage(e.stdout)
				return nil
			}
		}
		return usagef("help", "unknown command %q", args[0])
	}
	fmt.Fprintln(e.stdout, "backlog shows what the TCP listen backlog does on each system.")
	fmt.Fprintln(e.stdout)
	fmt.Fprintln(e.stdout, "Usage: backlog COMMAND [flags] [arguments]")
	fmt.Fprintln(e.stdout)
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	for _, c := range cmds {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.short)
	}
	tw.Flush()
	fmt.Fprintln(e.stdout)
	fmt.Fprintln(e.stdout, `Run "backlog help COMMAND" for a command's flags, "backlog --version" for the`)
	fmt.Fprintln(e.stdout, "version. Misuse exits with status 2, an interrupted command with 130.")
	return nil
}

// quiet is a gVisor log target that drops everything.
type quiet struct{}

func (quiet) Emit(int, gvlog.Level, time.Time, string, ...any) {}

// versionLine says which build this is, from the build information the Go
// toolchain records in the binary: the module version (or "devel"), the
// VCS revision and time when the build had them, and the Go version.
func versionLine() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "backlog (no build information)"
	}
	version := bi.Main.Version
	if version == "" || version == "(devel)" {
		version = "devel"
	}
	var rev, at, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = ", modified"
			}
		}
	}
	line := "backlog " + version
	if rev != "" {
		line += fmt.Sprintf(" (revision %.12s%s, %s)", rev, dirty, at)
	}
	return line + ", " + bi.GoVersion + " " + runtime.GOOS + "/" + runtime.GOARCH
}
