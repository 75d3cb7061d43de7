package kernel_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/backlog-dev/backlog/internal/netnstest"
)

// TestMain runs the descriptor-exhaustion helper when asked to, and
// otherwise the tests, checking that none leaves a goroutine behind.
func TestMain(m *testing.M) {
	netnstest.ListenersHelper()
	if mode := os.Getenv(emfileEnv); mode != "" {
		os.Exit(emfileHelper(mode))
	}
	goleak.VerifyTestMain(m)
}
