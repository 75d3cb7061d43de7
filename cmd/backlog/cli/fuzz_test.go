package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// FuzzArgs runs the command with any arguments: it never panics, exits 0,
// 1, 2 or 130, and a misuse (2) is one line on stderr and nothing on stdout. The
// commands that reach real sockets or run until interrupted (serve, fill,
// top, probe) are left out; lab runs in process, and the context is already
// cancelled, so every run ends at once.
func FuzzArgs(f *testing.F) {
	for _, seed := range []string{
		"explain 300", "explain --json --personality all -1 0 SOMAXCONN", "explain --personality linux:somaxconn=128 SOMAXCONN_HINT(7)",
		"personalities", "personalities --json linux", "help lab", "explain", "explain --personality", "explain -- -5",
		"lab --personality irsock --clients 3 --timeout 10ms", "lab --accept 5/s --accept-after 1ms", "explain 99999999999999999999999",
	} {
		f.Add(seed)
	}
	allowed := map[string]bool{"explain": true, "personalities": true, "help": true, "lab": true}
	f.Fuzz(func(t *testing.T, line string) {
		args := strings.Fields(line)
		if len(args) > 0 && !allowed[args[0]] {
			args[0] = "explain"
		}
		for i, a := range args {
			if a == "--transport" || strings.HasPrefix(a, "--transport=") || a == "-transport" || strings.HasPrefix(a, "-transport=") {
				args[i] = "--json" // the in-process network only
			}
			if strings.HasPrefix(a, "--svg") || strings.HasPrefix(a, "-svg") {
				args[i] = "--json" // no files
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		var out, errOut bytes.Buffer
		code := Main(ctx, args, &out, &errOut)
		switch code {
		case 0, 1, 130: // 130: a lab stopped by the cancelled context
		case 2:
			if strings.Count(errOut.String(), "\n") != 1 || out.Len() != 0 {
				t.Fatalf("%q: misuse printed stdout %q, stderr %q", args, out.String(), errOut.String())
			}
		default:
			t.Fatalf("%q: exit %d", args, code)
		}
	})
}
