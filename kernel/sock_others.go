//go:build !linux && !darwin && !freebsd && !windows

package kernel

import (
	"runtime"

	"github.com/backlog-dev/backlog"
)

// somaxconnName names what caps the backlog, for the warning.
const somaxconnName = "the system's maximum"

// hostSOMAXCONN is the customary SOMAXCONN of BSD-derived systems.
const hostSOMAXCONN = 128

// defaultBacklog is what this package assumes the runtime asks for.
func defaultBacklog() int { return hostSOMAXCONN }

// Somaxconn fails: this package does not know how to read the maximum here.
func Somaxconn() (int, error) { return 0, unsupported("reading somaxconn on " + runtime.GOOS) }

// HostPersonality returns backlog.Host with an error wrapping
// errors.ErrUnsupported: nothing was read from this system.
func HostPersonality() (backlog.Personality, error) {
	return backlog.Host(), unsupported("reading the listen settings of " + runtime.GOOS)
}
