package lab

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: a run stops its
// clients, its application and its listener before it returns.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
