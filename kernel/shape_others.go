//go:build !linux

package kernel

import (
	"context"
	"runtime"
)

// A Shaper puts a listener of this host under another system's rules at
// the SYN. Only Linux has one.
type Shaper struct{}

// Shape fails with an error wrapping errors.ErrUnsupported: SYNs can be
// decided in user space on Linux only.
func Shape(context.Context, ShapeConfig) (*Shaper, error) {
	return nil, unsupported("shaping SYNs on " + runtime.GOOS)
}

// Stats returns nothing.
func (*Shaper) Stats() ShaperStats { return ShaperStats{} }

// Socket returns nothing.
func (*Shaper) Socket() Socket { return Socket{} }

// Close does nothing.
func (*Shaper) Close() error { return nil }
