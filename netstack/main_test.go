package netstack

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// host, listener and connection must stop what it started when closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
