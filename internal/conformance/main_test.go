package conformance

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the tests if any goroutine or descriptor outlives them.
// tunAttachments counts the netstack hosts attached to a TUN device.
var tunAttachments atomic.Int32

func TestMain(m *testing.M) {
	// The runtime's network poller opens its own descriptors on first use:
	// start it before counting.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
	before := openDescriptors()
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines outlived the tests:", err)
			code = 1
		}
		// gVisor's fdbased link makes an eventfd per dispatcher to stop
		// it (pkg/tcpip/link/stopfd New) and never closes it: each TUN
		// attachment leaves one behind.
		if after := openDescriptors() - int(tunAttachments.Load()); before >= 0 && after != before {
			fmt.Fprintf(os.Stderr, "descriptors outlived the tests: %d open before, %d after\n", before, after)
			code = 1
		}
	}
	os.Exit(code)
}

// openDescriptors counts this process's open descriptors, or -1 where that
// cannot be read.
func openDescriptors() int {
	if runtime.GOOS != "linux" {
		return -1
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(entries) - 1 // the directory being read
}
