// Package cli implements the backlog command. Run takes the arguments and
// the output streams, so tests drive the whole command in process.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"
	"text/tabwriter"
)

// A command is one subcommand: its name, a line for the command list, and
// the function that runs it.
type command struct {
	name  string
	short string
	usage string
	run   func(ctx context.Context, e *env, args []string) error
}

// env carries what every command writes to.
type env struct {
	stdout, stderr io.Writer
}

func commands() []command {
	return []command{
		{"lab", "watch a listen queue at work, on any system's rules", labUsage, runLab},
		{"probe", "learn what this host's kernel does with the backlog", probeUsage, runProbe},
		{"top", "every listening TCP socket of this host, live", topUsage, runTop},
		{"exporter", "Prometheus metrics for every listen queue of this host", exporterUsage, runExporter},
		{"serve", "a real server with the backlog you choose, its queue shown", serveUsage, runServe},
		{"shape", "put a listener of this host under another system's rules at the SYN", shapeUsage, runShape},
		{"fill", "open many connections to an address and see what each meets", fillUsage, runFill},
		{"explain", "what listen(BACKLOG) becomes on each system", explainUsage, runExplain},
		{"personalities", "every system's listen() rules", personalitiesUsage, runPersonalities},
	}
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
	}
	for _, c := range cmds {
		if c.name == args[0] {
			return c.run(ctx, e, args[1:])
		}
	}
	return usagef("", "unknown command %q; commands: %s", args[0], strings.Join(names, ", "))
}

// Main runs the command and returns its exit status: 0 on success, 2 on
// misuse, 130 when interrupted (a command that reports it was stopped
// has said what it did by then), 1 on any other failure. Errors are
// printed to stderr on one line.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
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
				fmt.Fprint(e.stdout, c.usage)
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
	fmt.Fprintln(e.stdout, `Run "backlog help COMMAND" for a command's flags.`)
	return nil
}

var negativeNumber = regexp.MustCompile(`^-[0-9]+$`)

// parseFlags parses args with fs and returns the positional arguments.
// Unlike fs.Parse, it accepts flags after positional arguments, and takes
// negative numbers ("-1") as positional arguments, since a backlog may be
// negative. "--" ends the flags. -h prints usage and returns flag.ErrHelp.
func parseFlags(e *env, fs *flag.FlagSet, usage string, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var flags, positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			positional = append(positional, args[i+1:]...)
			i = len(args)
		case negativeNumber.MatchString(a) || !strings.HasPrefix(a, "-") || a == "-":
			positional = append(positional, a)
		default:
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if strings.Contains(name, "=") {
				continue
			}
			if f := fs.Lookup(name); f != nil && !isBool(f) && i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
		}
	}
	if err := fs.Parse(flags); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(e.stdout, usage)
			return nil, err
		}
		return nil, usagef(fs.Name(), "%v; flags: %s", err, flagNames(fs))
	}
	return positional, nil
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func flagNames(fs *flag.FlagSet) string {
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, "--"+f.Name) })
	return strings.Join(names, ", ")
}

// listFlag is a flag that may be repeated.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }
