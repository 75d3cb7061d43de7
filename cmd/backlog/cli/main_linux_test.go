package cli

import (
	"os"
	"testing"

	"github.com/backlog-dev/backlog/internal/netnstest"
)

// TestMain runs the listener helper of netnstest.HoldListeners when asked
// to, and otherwise the tests.
func TestMain(m *testing.M) {
	netnstest.ListenersHelper()
	privilegesDroppable = false
	os.Exit(m.Run())
}
