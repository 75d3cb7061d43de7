//go:build !unix

package transport

import "syscall"

// reuseAddr does nothing where there is no SO_REUSEADDR to speak of.
func reuseAddr(_, _ string, _ syscall.RawConn) error { return nil }
