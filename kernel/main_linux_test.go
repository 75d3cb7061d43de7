package kernel_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain runs the descriptor-exhaustion helper when asked to, and
// otherwise the tests, checking that none leaves a goroutine behind.
func TestMain(m *testing.M) {
	if mode := os.Getenv(emfileEnv); mode != "" {
		os.Exit(emfileHelper(mode))
	}
	goleak.VerifyTestMain(m)
}
