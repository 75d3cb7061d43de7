package cli

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/backlog-dev/backlog/internal/netnstest"
)

// binary is the command built once for the tests that run it as a child
// process: those of signals, terminals and privileges. It is empty when
// the build failed or -short skipped it; buildErr says why.
var (
	binary   string
	buildErr error
)

// TestMain runs the listener helper of netnstest.HoldListeners when asked
// to; otherwise it builds the command and runs the tests. The tests'
// serve runs in this process, whose privileges it must not drop.
func TestMain(m *testing.M) {
	netnstest.ListenersHelper()
	privilegesDroppable = false
	dir, err := os.MkdirTemp("", "backlog-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "backlog")
	if out, err := exec.Command("go", "build", "-o", binary, "github.com/backlog-dev/backlog/cmd/backlog").CombinedOutput(); err != nil {
		binary, buildErr = "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireBinary returns the built command, or fails the test.
func requireBinary(t *testing.T) string {
	t.Helper()
	if binary == "" {
		t.Fatalf("the command was not built: %v", buildErr)
	}
	return binary
}
