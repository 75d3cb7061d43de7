package kernel

import (
	"syscall"

	"github.com/backlog-dev/backlog"
)

// somaxconnName names what caps the backlog, for the warning.
const somaxconnName = "the Winsock provider's maximum"

// hostSOMAXCONN is SOMAXCONN in winsock2.h.
const hostSOMAXCONN = backlog.WinsockSOMAXCONN

// defaultBacklog is what net.Listen passes to listen() on Windows
// (net/sock_windows.go maxListenerBacklog): SOMAXCONN, which asks the
// provider for its maximum.
func defaultBacklog() int { return syscall.SOMAXCONN }

// Somaxconn returns the largest backlog Windows stores, as documented
// rather than read: Windows offers no way to read it, and the documentation
// says only "a maximum reasonable value", modelled by backlog.Windows.
func Somaxconn() (int, error) { return backlog.Windows().Maximum(), nil }

// HostPersonality returns backlog.Windows: Windows has no settings for it
// to read.
func HostPersonality() (backlog.Personality, error) { return backlog.Windows(), nil }
