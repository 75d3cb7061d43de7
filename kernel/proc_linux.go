package kernel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/backlog-dev/backlog"
)

// readSysctl reads an integer from /proc/sys/name. Networking settings
// under /proc/sys/net belong to the network namespace of the reading thread.
func readSysctl(name string) (int, error) {
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("/proc/sys/%s: %w", name, err)
	}
	return n, nil
}

// HostPersonality returns the listen() rules of the running system, built
// from its actual settings. On Linux that is backlog.Linux with
// net.core.somaxconn and the net.ipv4 settings tcp_syncookies,
// tcp_abort_on_overflow, tcp_max_syn_backlog, tcp_syn_retries,
// tcp_syn_linear_timeouts (0 when absent: kernels before 6.5 have none and
// back off from the first retransmission) and tcp_synack_retries, read for
// the calling thread's network namespace. Params lists the settings that
// differ from backlog.DefaultLinuxConfig, so backlog.Lookup(p.String())
// gives the same rules back.
//
// A setting that cannot be read keeps its default, and the error says
// which; the personality is usable either way.
func HostPersonality() (backlog.Personality, error) {
	c := backlog.DefaultLinuxConfig()
	def := c
	settings := []struct {
		param, sysctl string
		dst           *int
		optional      bool
	}{
		{"somaxconn", "net/core/somaxconn", &c.Somaxconn, false},
		{"syncookies", "net/ipv4/tcp_syncookies", &c.SynCookies, false},
		{"abort_on_overflow", "net/ipv4/tcp_abort_on_overflow", nil, false},
		{"max_syn_backlog", "net/ipv4/tcp_max_syn_backlog", &c.MaxSynBacklog, false},
		{"syn_retries", "net/ipv4/tcp_syn_retries", &c.SynRetries, false},
		{"syn_linear_timeouts", "net/ipv4/tcp_syn_linear_timeouts", &c.SynLinearTimeouts, true},
		{"synack_retries", "net/ipv4/tcp_synack_retries", &c.SynAckRetries, false},
	}
	var errs []error
	var params []string
	for _, s := range settings {
		v, err := readSysctl(s.sysctl)
		switch {
		case err != nil && s.optional && errors.Is(err, fs.ErrNotExist):
			v = 0
		case err != nil:
			errs = append(errs, err)
			continue
		}
		var changed bool
		if s.dst == nil {
			c.AbortOnOverflow = v != 0
			changed = c.AbortOnOverflow != def.AbortOnOverflow
		} else {
			changed = *s.dst != v
			*s.dst = v
		}
		if changed {
			params = append(params, s.param+"="+strconv.Itoa(v))
		}
	}
	p := backlog.Linux(c)
	p.Params = strings.Join(params, ",")
	return p, errors.Join(errs...)
}

// netstatPath is the namespace-wide counter file of the calling thread.
// /proc/thread-self (Linux 3.17) follows the thread into a network
// namespace it entered; /proc/self/net shows the main thread's.
func netstatPath() string {
	if _, err := os.Stat("/proc/thread-self/net/netstat"); err == nil {
		return "/proc/thread-self/net/netstat"
	}
	return "/proc/self/net/netstat"
}

// ReadCounters reads the listen-queue counters of the calling thread's
// network namespace (normally the process's) from the TcpExt lines of
// /proc/net/netstat. A counter the running kernel does not have reads 0.
func ReadCounters() (Counters, error) {
	b, err := os.ReadFile(netstatPath())
	if err != nil {
		return Counters{}, err
	}
	return parseNetstat(b)
}

// parseNetstat reads the TcpExt header and value lines of /proc/net/netstat.
func parseNetstat(b []byte) (Counters, error) {
	var c Counters
	fields := map[string]*uint64{
		"ListenOverflows":      &c.ListenOverflows,
		"ListenDrops":          &c.ListenDrops,
		"TCPReqQFullDrop":      &c.TCPReqQFullDrop,
		"TCPReqQFullDoCookies": &c.TCPReqQFullDoCookies,
		"SyncookiesSent":       &c.SyncookiesSent,
		"SyncookiesRecv":       &c.SyncookiesRecv,
		"SyncookiesFailed":     &c.SyncookiesFailed,
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 8<<10), 1<<20)
	var names []string
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "TcpExt:")
		if !ok {
			continue
		}
		if names == nil {
			names = strings.Fields(rest)
			continue
		}
		values := strings.Fields(rest)
		if len(values) != len(names) {
			return Counters{}, errors.New("netstat: TcpExt header and values differ in length")
		}
		for i, name := range names {
			if dst, ok := fields[name]; ok {
				v, err := strconv.ParseUint(values[i], 10, 64)
				if err != nil {
					return Counters{}, fmt.Errorf("netstat: TcpExt %s: %w", name, err)
				}
				*dst = v
			}
		}
		return c, nil
	}
	if err := sc.Err(); err != nil {
		return Counters{}, err
	}
	return Counters{}, errors.New("netstat: no TcpExt lines")
}

// FindHolders fills in PID and Process for the sockets given (as
// SocketsWithoutHolders lists them, from any network namespace: socket
// inodes are unique host-wide), scanning the descriptor links of every
// process once, in ascending PID order, as `ss -p` does. Another user's
// processes need CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (or root's
// CAP_DAC_OVERRIDE) to be read; their sockets keep PID 0.
func FindHolders(socks []Socket) {
	want := make(map[uint64]*Socket, len(socks))
	for i := range socks {
		if socks[i].PID == 0 {
			want[socks[i].Inode] = &socks[i]
		}
	}
	findHolders(want)
}

// findHolders fills in PID and Process for the sockets in want, scanning
// the descriptor links of every process in ascending PID order, and stops
// once every socket has a holder. Processes that vanish or cannot be read
// are skipped.
func findHolders(want map[uint64]*Socket) {
	if len(want) == 0 {
		return
	}
	left := len(want)
	for _, pid := range pids() {
		dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
		fdDir, err := os.Open(dir)
		if err != nil {
			continue
		}
		fds, _ := fdDir.Readdirnames(-1)
		fdDir.Close()
		var name string
		for _, fd := range fds {
			link, err := os.Readlink(dir + fd)
			if err != nil {
				continue
			}
			num, ok := strings.CutPrefix(link, "socket:[")
			if !ok {
				continue
			}
			inode, err := strconv.ParseUint(strings.TrimSuffix(num, "]"), 10, 64)
			if err != nil {
				continue
			}
			s, ok := want[inode]
			if !ok || s.PID != 0 {
				continue
			}
			if name == "" {
				name = comm(pid)
			}
			s.PID, s.Process = pid, name
			if left--; left == 0 {
				return
			}
		}
	}
}
