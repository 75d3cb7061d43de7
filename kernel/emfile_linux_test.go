package kernel_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/backlog-dev/backlog/kernel"
)

// emfileEnv switches the test binary into the helper of
// TestDescriptorExhaustion: "wait" or "shed".
const emfileEnv = "BACKLOG_KERNEL_EMFILE_HELPER"

// emfileHelper is the child process: it lowers RLIMIT_NOFILE, listens,
// serves "ok\n" to every client it accepts, uses up every descriptor, and
// then follows commands from stdin: "mark" (note the CPU time used so far),
// "cpu" (print the CPU microseconds since the mark), "release" (give the
// descriptors back), "stats" (print KernelStats as JSON) and "quit".
func emfileHelper(mode string) int {
	fail := func(err error) int { fmt.Println("error", err); return 1 }
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fail(err)
	}
	lim.Cur = 64
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fail(err)
	}
	lc := kernel.ListenConfig{Backlog: 32, ShedLoad: mode == "shed"}
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("ok\n"))
			c.Close()
		}
	}()
	// Take every free descriptor.
	var hog []int
	take := func() error {
		for {
			fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
			if err != nil {
				if errors.Is(err, syscall.EMFILE) {
					return nil
				}
				return err
			}
			hog = append(hog, fd)
		}
	}
	if err := take(); err != nil {
		return fail(err)
	}
	// Something else in the process (the runtime, say) may hold a
	// descriptor while the hog sweeps and close it later; the listener
	// would get it. So the limit comes down to just above the lowest
	// descriptor the hog holds: everything below was open before the
	// sweep and stays open (stdio, the runtime's, the socket and the
	// spare), and whatever is closed above can no longer be allocated.
	lowest := slices.Min(hog)
	low := lim
	low.Cur = uint64(lowest + 1)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		return fail(err)
	}
	fmt.Println("addr", ln.Addr())
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	var mark time.Duration
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "mark":
			mark = cpu()
			fmt.Println("marked")
		case "cpu":
			fmt.Println("cpu", (cpu() - mark).Microseconds())
		case "release":
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
				return fail(err)
			}
			for _, fd := range hog {
				syscall.Close(fd)
			}
			hog = nil
			fmt.Println("released")
		case "stats":
			s, err := ln.KernelStats()
			if err != nil {
				return fail(err)
			}
			b, _ := json.Marshal(s)
			fmt.Println("stats", string(b))
		case "quit":
			ln.Close()
			wg.Wait()
			return 0
		}
	}
	return 1
}

// helper is the parent's handle on an emfileHelper process.
type helper struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startHelper(t *testing.T, mode string) (*helper, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), emfileEnv+"="+mode)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("helper stderr:\n%s", stderr.String())
		}
	})
	return h, h.expect(t, "addr")
}

// send writes a command and returns the argument of the reply, which must
// start with word.
func (h *helper) send(t *testing.T, cmd, word string) string {
	t.Helper()
	fmt.Fprintln(h.in, cmd)
	return h.expect(t, word)
}

func (h *helper) expect(t *testing.T, word string) string {
	t.Helper()
	if !h.out.Scan() {
		t.Fatalf("helper ended while the test waited for %q", word)
	}
	reply, arg, _ := strings.Cut(h.out.Text(), " ")
	if reply != word {
		t.Fatalf("helper said %q; want %q", h.out.Text(), word)
	}
	return arg
}

// outcome is what a client saw: served ("ok"), reset, or nothing yet.
type outcome struct {
	served, reset bool
	after         time.Duration // from the start of the dial
	err           error
}

// client dials addr and reads the server's answer, reporting on the
// channel when it has one, or when it gives up after wait.
func client(addr string, wait time.Duration, res chan<- outcome) {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		res <- outcome{reset: errors.Is(err, syscall.ECONNRESET), after: time.Since(start), err: err}
		return
	}
	defer c.Close()
	c.SetReadDeadline(start.Add(wait))
	line, err := bufio.NewReader(c).ReadString('\n')
	o := outcome{after: time.Since(start), err: err}
	switch {
	case line == "ok\n":
		o.served, o.err = true, nil
	case errors.Is(err, syscall.ECONNRESET):
		o.reset, o.err = true, nil
	}
	res <- o
}

// TestDescriptorExhaustion runs a listener in a child process whose
// descriptors are all used up (RLIMIT_NOFILE lowered to 64), with real
// clients: the listener burns almost no CPU while it cannot accept, clients
// wait (or, with ShedLoad, are reset promptly), and once descriptors return
// every waiting client is served and new ones are too.
func TestDescriptorExhaustion(t *testing.T) {
	const (
		starved = 1500 * time.Millisecond
		maxCPU  = 150 * time.Millisecond // a busy loop would use about `starved`
	)
	// In the storm, more clients arrive than the queue holds (33): the
	// rest send their SYNs again until descriptors are back. They arrive
	// 10 ms apart: all at once, they would overflow the SYN queue too, and
	// Linux would answer with SYN cookies whose final ACKs, dropped on the
	// full accept queue, leave clients that never send anything believing
	// they are connected (net/ipv4/syncookies.c), which is not what this
	// test is about.
	for _, tc := range []struct {
		name, mode string
		clients    int
		apart      time.Duration
	}{{"wait", "wait", 4, 0}, {"shed", "shed", 4, 0}, {"storm", "wait", 100, 10 * time.Millisecond}} {
		mode, clients, apart := tc.mode, tc.clients, tc.apart
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h, addr := startHelper(t, mode)
			h.send(t, "mark", "marked")
			res := make(chan outcome, 2*clients)
			for i := range clients {
				go func() { time.Sleep(time.Duration(i) * apart); client(addr, 6*time.Second, res) }()
			}
			time.Sleep(starved)
			cpu, _ := strconv.Atoi(h.send(t, "cpu", "cpu"))
			t.Logf("%d clients, RLIMIT_NOFILE 64: the listener used %v of CPU in %v without descriptors", clients, time.Duration(cpu)*time.Microsecond, starved)
			if used := time.Duration(cpu) * time.Microsecond; used > maxCPU {
				t.Errorf("the listener used %v of CPU in %v without descriptors; want at most %v", used, starved, maxCPU)
			}
			var early []outcome
			for len(res) > 0 {
				early = append(early, <-res)
			}
			if mode == "shed" {
				if len(early) != clients {
					t.Fatalf("with ShedLoad, %d of %d clients had an answer while descriptors were out", len(early), clients)
				}
				for _, o := range early {
					if !o.reset || o.after > 500*time.Millisecond {
						t.Errorf("with ShedLoad a client saw reset=%v after %v (%v); want a prompt reset", o.reset, o.after, o.err)
					}
				}
			} else if len(early) != 0 {
				t.Fatalf("without ShedLoad, clients were answered while descriptors were out: %+v", early)
			}

			h.send(t, "release", "released")
			// Waiting clients are served within the back-off's 1 s
			// ceiling, and new clients at once.
			for i := range clients {
				go func() { time.Sleep(time.Duration(i) * apart); client(addr, 3*time.Second, res) }()
			}
			waiting := clients - len(early)
			for i := range waiting + clients {
				o := <-res
				if !o.served {
					t.Errorf("client %d after descriptors returned: %+v; want served", i, o)
				}
			}
			var s kernel.Stats
			json.Unmarshal([]byte(h.send(t, "stats", "stats")), &s)
			wantShed := uint64(0)
			if mode == "shed" {
				wantShed = uint64(clients)
			}
			if s.Shed != wantShed || s.Reset != wantShed || s.Accepted != uint64(waiting+clients) || s.Starved == 0 {
				t.Errorf("Stats: Shed %d, Reset %d, Accepted %d, Starved %d; want %d, %d, %d, >0", s.Shed, s.Reset, s.Accepted, s.Starved, wantShed, wantShed, waiting+clients)
			}
			fmt.Fprintln(h.in, "quit")
			if err := h.cmd.Wait(); err != nil {
				t.Errorf("helper: %v", err)
			}
		})
	}
}
