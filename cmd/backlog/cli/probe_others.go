//go:build !linux

package cli

import (
	"context"
	"fmt"
	"runtime"
)

// probeFull is called on Linux only.
var probeFull func(addr string)

// probeSupported fails: the probe reads its clients' TCP_INFO, which only
// Linux offers in this form.
func probeSupported() error {
	return fmt.Errorf("probe needs Linux (TCP_INFO on the client sockets); this is %s", runtime.GOOS)
}

func probeListener(context.Context, probeConfig) (probeMeasure, error) {
	return probeMeasure{}, probeSupported()
}
