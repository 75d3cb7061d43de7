package deploy

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/backlog-dev/backlog/internal/netnstest"
	"github.com/backlog-dev/backlog/kernel"
)

// TestCapabilities runs the built exporter with exactly the capabilities
// the DaemonSet grants, then with each of them taken away, and with none,
// as root otherwise stripped of every capability (setpriv). Another user
// (nobody) holds a listening socket on loopback, and a namespace of the
// test's own holds another. With the DaemonSet's three, the exporter reads
// both sockets, the holder of nobody's and the namespace; each one taken
// away loses the reading the DaemonSet's comment gives it; and with none
// at all it still lists nobody's socket, since sock_diag needs no
// privilege.
func TestCapabilities(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it drops capabilities with setpriv")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv (util-linux)")
	}
	ns := netnstest.New(t)
	var err error
	netnstest.In(t, ns, func() {
		var l *kernel.Listener
		if l, err = kernel.Listen("tcp4", "127.0.0.1:7", 5); err == nil {
			t.Cleanup(func() { l.Close() })
		}
	})
	if err != nil {
		t.Fatal(err)
	}

	holder := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", binary,
		"serve", "--listen", "127.0.0.1:0", "--handler", "echo")
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	m := regexp.MustCompile(`^serving echo on (\S+) `).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("nobody's server said %q", line)
	}
	addr, pid := m[1], holder.Process.Pid

	socket := regexp.MustCompile(`(?m)^backlog_socket_info\{address="` + regexp.QuoteMeta(addr) + `",[^}]*pid="(\d+)"[^}]*uid="65534"\} 1$`)
	nsUp := regexp.MustCompile(`(?m)^backlog_exporter_netns_up\{netns="` + regexp.QuoteMeta(ns) + `"\} 1$`)
	nsSocket := regexp.MustCompile(`(?m)^backlog_socket_backlog\{address="127.0.0.1:7",[^}]*netns="` + regexp.QuoteMeta(ns) + `"[^}]*\} 5$`)

	ds := readDaemonSet(t)
	granted := ds.Spec.Template.Spec.Containers[0].SecurityContext.Capabilities.Add
	for _, tc := range []struct {
		name          string
		without       string // "" keeps all granted; "ALL" drops them all
		holder, netns bool
	}{
		{"as the DaemonSet", "", true, true},
		{"without SYS_ADMIN", "SYS_ADMIN", true, false},
		{"without SYS_PTRACE", "SYS_PTRACE", false, true},
		{"without DAC_READ_SEARCH", "DAC_READ_SEARCH", false, true},
		{"with none", "ALL", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			caps := "-all"
			for _, c := range granted {
				if c != tc.without && tc.without != "ALL" {
					caps += ",+" + strings.ToLower(c)
				}
			}
			out, err := exec.Command("setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set="+caps,
				binary, "exporter", "--once", "--all-netns").Output()
			if err != nil {
				t.Fatalf("exporter with %s: %v", caps, err)
			}
			s := socket.FindSubmatch(out)
			if s == nil {
				t.Fatalf("with %s, nobody's socket %s is not listed", caps, addr)
			}
			if got := string(s[1]) == fmt.Sprint(pid); got != tc.holder {
				t.Errorf("with %s: holder pid %s (nobody's server is %d); want it read: %v", caps, s[1], pid, tc.holder)
			}
			if got := nsUp.Match(out) && nsSocket.Match(out); got != tc.netns {
				t.Errorf("with %s: namespace %s read %v; want %v", caps, ns, got, tc.netns)
			}
		})
	}
}
