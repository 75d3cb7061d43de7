//go:build !linux

package kernel

import (
	"runtime"
)

// synSide exists on Linux only.
type synSide struct{}

func startAtSYN(*emulator) (*synSide, error) {
	return nil, unsupported("deciding SYNs in user space on " + runtime.GOOS)
}

func (*synSide) freed()       {}
func (*synSide) close() error { return nil }
func (*synSide) release()     {}
func (*synSide) stop()        {}

func (e *emulator) runAtSYN() { e.run() }
