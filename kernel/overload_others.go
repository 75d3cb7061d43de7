//go:build !linux

package kernel

import "net"

// canPoll says that poll cannot take a connection without blocking here;
// the overload policy, which needs the kernel's queue wait, is Linux's
// anyway.
const canPoll = false

func (s *socketListener) poll() (net.Conn, bool) { return nil, false }
