//go:build !linux

package kernel

import (
	"net"
	"runtime"
	"time"
)

// Sockets fails with an error wrapping errors.ErrUnsupported: only Linux
// has sock_diag.
func Sockets() ([]Socket, error) {
	return nil, unsupported("listing listening sockets on " + runtime.GOOS)
}

// SocketByInode fails with an error wrapping errors.ErrUnsupported: only
// Linux has sock_diag.
func SocketByInode(uint64) (Socket, error) {
	return Socket{}, unsupported("reading a socket by inode on " + runtime.GOOS)
}

// ReadCounters fails with an error wrapping errors.ErrUnsupported: only
// Linux exposes these counters in /proc/net/netstat.
func ReadCounters() (Counters, error) {
	return Counters{}, unsupported("reading listen counters on " + runtime.GOOS)
}

// halfOpen reports nothing: only Linux lists request sockets.
func halfOpen(uint64, uint8, uint16) (int, bool) { return 0, false }

// measuresQueueWait says that no connection's time in the queue can be
// read here: only Linux's TCP_INFO has it.
const measuresQueueWait = false

func queueWait(net.Conn) (time.Duration, bool) { return 0, false }

// SocketsWithoutHolders fails with an error wrapping errors.ErrUnsupported:
// only Linux has sock_diag.
func SocketsWithoutHolders() ([]Socket, error) {
	return nil, unsupported("listing listening sockets on " + runtime.GOOS)
}

// FindHolders does nothing: only Linux is read.
func FindHolders([]Socket) {}

// CurrentNamespace fails with an error wrapping errors.ErrUnsupported:
// network namespaces are Linux's.
func CurrentNamespace() (Namespace, error) {
	return Namespace{}, unsupported("network namespaces on " + runtime.GOOS)
}

// Namespaces fails with an error wrapping errors.ErrUnsupported.
func Namespaces() ([]Namespace, error) {
	return nil, unsupported("network namespaces on " + runtime.GOOS)
}

// Do runs f: there is only one namespace.
func (n Namespace) Do(f func()) error { f(); return nil }

// OpenNamespace fails with an error wrapping errors.ErrUnsupported.
func OpenNamespace(string) (Namespace, error) {
	return Namespace{}, unsupported("network namespaces on " + runtime.GOOS)
}
