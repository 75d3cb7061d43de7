package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/backlog-dev/backlog/kernel"
)

// TestFill fills a kernel listener on loopback with backlog 1 that never
// accepts: two clients connect (N+1) and the others hear nothing.
func TestFill(t *testing.T) {
	l, err := (&kernel.ListenConfig{Backlog: 1}).Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()
	code, out, errOut := run(t, "fill", "--clients", "4", "--arrival", "10ms", "--timeout", "300ms", "--hold", "0s", addr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	out = strings.ReplaceAll(normalize(out), addr, "ADDR")
	golden(t, "fill.golden", out)

	code, out, _ = run(t, "fill", "--json", "--clients", "3", "--arrival", "10ms", "--timeout", "300ms", "--hold", "0s", addr)
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); code != 0 || err != nil {
		t.Fatalf("exit %d, %v: %s", code, err, out)
	}
	// The queue is still full from the first run: no one gets in.
	if r["clients"] != 3.0 || r["connected"] != 0.0 || r["timed_out"] != 3.0 || r["target"] != addr {
		t.Errorf("JSON %v; want 3 clients, none connected, 3 timed out", r)
	}
}
