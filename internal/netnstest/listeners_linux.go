package netnstest

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// listenersEnv makes a test binary a helper process that holds listening
// sockets: "ADDRESS FIRSTPORT COUNT BACKLOG".
const listenersEnv = "BACKLOG_NETNSTEST_LISTENERS"

// perHelper is how many sockets one helper process holds, within the
// descriptor limit a test process has here (20,000, which only
// CAP_SYS_RESOURCE could raise).
const perHelper = 15000

// ListenersHelper is for a test binary's TestMain: when the binary was
// started by HoldListeners, it holds the listening sockets asked for,
// says so, waits for its standard input to close and exits; otherwise it
// returns at once.
func ListenersHelper() {
	spec := os.Getenv(listenersEnv)
	if spec == "" {
		return
	}
	f := strings.Fields(spec)
	if len(f) != 4 {
		fmt.Println("bad spec", spec)
		os.Exit(2)
	}
	addr := netip.MustParseAddr(f[0])
	first, _ := strconv.Atoi(f[1])
	count, _ := strconv.Atoi(f[2])
	backlog, _ := strconv.Atoi(f[3])
	for i := range count {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			err = unix.Bind(fd, &unix.SockaddrInet4{Addr: addr.As4(), Port: first + i})
		}
		if err == nil {
			err = unix.Listen(fd, backlog)
		}
		if err != nil {
			fmt.Println("error", first+i, err)
			os.Exit(1)
		}
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// HoldListeners makes count IPv4 listening sockets with the given backlog
// on addr, ports firstPort and up, in the namespace ns, held by helper
// processes (the test binary again, whose TestMain calls ListenersHelper)
// started from a thread in the namespace, so that a test can have more
// sockets than its own descriptor limit allows. They are closed when the
// test ends.
func HoldListeners(t testing.TB, ns, addr string, firstPort, count, backlog int) {
	t.Helper()
	for start := 0; start < count; start += perHelper {
		n := min(perHelper, count-start)
		var err error
		In(t, ns, func() {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d %d", listenersEnv, addr, firstPort+start, n, backlog))
			cmd.Stderr = os.Stderr
			stdin, perr := cmd.StdinPipe()
			stdout, oerr := cmd.StdoutPipe()
			if perr != nil || oerr != nil {
				err = fmt.Errorf("pipes: %v %v", perr, oerr)
				return
			}
			if err = cmd.Start(); err != nil {
				return
			}
			t.Cleanup(func() { stdin.Close(); cmd.Wait() })
			line, _ := bufio.NewReader(stdout).ReadString('\n')
			if line != "ready\n" {
				err = fmt.Errorf("listener helper: %q", line)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
