package cli

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backlog-dev/backlog/internal/netnstest"
)

// readmeCommands returns the commands of README.md's code blocks that
// run the command: "go run ./cmd/backlog ...", "backlog ..." and "go
// install ./cmd/backlog".
func readmeCommands(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	in := false
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "```") {
			in = !in
			continue
		}
		f := strings.Fields(l)
		switch {
		case !in || len(f) < 2:
		case strings.HasPrefix(l, "go run ./cmd/backlog"), strings.HasPrefix(l, "go install ./cmd/backlog"):
			cmds = append(cmds, l)
		case f[0] == "backlog" && (strings.HasPrefix(f[1], "--") || isCommand(f[1])):
			cmds = append(cmds, l)
		}
	}
	return cmds
}

func isCommand(name string) bool {
	for _, c := range commands() {
		if c.name == name {
			return true
		}
	}
	return false
}

// capsOf returns the CapEff and CapPrm lines of every thread of a process.
func capsOf(t *testing.T, pid int) []string {
	t.Helper()
	tasks, err := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/status")
	if err != nil || len(tasks) == 0 {
		t.Fatalf("no threads of %d: %v", pid, err)
	}
	var out []string
	for _, task := range tasks {
		b, err := os.ReadFile(task)
		if err != nil {
			continue // a thread that ended
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "CapEff:") || strings.HasPrefix(l, "CapPrm:") {
				out = append(out, strings.Join(strings.Fields(l), " "))
			}
		}
	}
	return out
}

// TestReadmeExamples runs every command README.md shows, as written: the
// short ones must succeed; the ones that run until interrupted (serve,
// top, exporter) must start, then exit 130 on SIGINT; the TUN example
// runs as root in a network namespace of its own, is reached there at
// 198.18.0.2:8080, holds no capability once serving, and leaves no device
// behind.
func TestReadmeExamples(t *testing.T) {
	bin := requireBinary(t)
	cmds := readmeCommands(t)
	if len(cmds) < 4 {
		t.Fatalf("README.md shows %d commands: %q", len(cmds), cmds)
	}
	for _, line := range cmds {
		t.Run(line, func(t *testing.T) {
			args := strings.Fields(line)
			switch {
			case args[0] == "go" && args[1] == "install":
				gobin := t.TempDir()
				cmd := exec.Command(args[0], args[1:]...)
				cmd.Dir = "../../.."
				cmd.Env = append(os.Environ(), "GOBIN="+gobin)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("%s: %v\n%s", line, err, out)
				}
				if out, err := exec.Command(filepath.Join(gobin, "backlog"), "--version").Output(); err != nil || !strings.HasPrefix(string(out), "backlog ") {
					t.Errorf("the installed backlog --version: %q, %v", out, err)
				}
				return
			case args[0] == "go":
				args = args[3:] // go run ./cmd/backlog
			default:
				args = args[1:]
			}
			switch {
			case args[0] == "serve" && strings.Contains(line, "--tun"):
				readmeTUN(t, bin, args)
			case args[0] == "serve" || args[0] == "top" || args[0] == "exporter":
				c := startChild(t, args...)
				c.stdout.await(t, regexp.MustCompile(`(?m)^(serving|backlog exporter: metrics on|LOCAL|ListenOverflows)`))
				if code := c.interrupt(t); code != 130 {
					t.Errorf("%s: exit %d on SIGINT; want 130", line, code)
				}
			default:
				cmd := exec.Command(bin, args...)
				cmd.Dir = t.TempDir() // where lab.svg goes
				out, err := cmd.Output()
				if err != nil {
					t.Fatalf("%s: %v\n%s", line, err, out)
				}
				if args[0] == "lab" && len(args) == 1 {
					readmeLabOutput(t, string(out))
				}
			}
		})
	}
}

// readmeLabOutput checks that what README.md shows of `lab` is what it
// prints. It holds however busy the machine: each client waits for the
// server to have answered or dropped the one before (the lab's crowd
// settles), so no two handshakes overlap that README's run keeps apart.
func readmeLabOutput(t *testing.T, out string) {
	b, _ := os.ReadFile("../../../README.md")
	readme := string(b)
	marker := "```\ngo run ./cmd/backlog lab\n```\n"
	i := strings.Index(readme, marker)
	if i < 0 {
		t.Fatal("README.md shows no lab run")
	}
	rest := readme[i+len(marker):]
	start := strings.Index(rest, "```\n") + 4
	shown := rest[start : start+strings.Index(rest[start:], "```")]
	host := transportHostName()
	shown = strings.Replace(shown, "linux,", host+",", 1)
	if !strings.HasPrefix(out, shown) {
		t.Fatalf("README shows:\n%s\nlab prints:\n%s", shown, out)
	}
}

func transportHostName() string {
	out, _ := exec.Command(binary, "lab", "--json", "--clients", "1", "--timeout", "10ms").Output()
	m := regexp.MustCompile(`"personality": "([^"]+)"`).FindStringSubmatch(string(out))
	if m == nil {
		return "linux"
	}
	return m[1]
}

// readmeTUN runs serve on a TUN device as README.md says, as root, inside
// a network namespace made for the test.
func readmeTUN(t *testing.T, bin string, args []string) {
	netnstest.RequireRoot(t)
	ns := netnstest.New(t)
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	sc := bufio.NewScanner(stdout)
	var head []string
	for sc.Scan() {
		head = append(head, sc.Text())
		if strings.HasPrefix(sc.Text(), "capabilities:") {
			break
		}
	}
	if len(head) == 0 || !strings.HasPrefix(head[0], "serving http on 198.18.0.2:8080 (netstack") {
		t.Fatalf("serve printed %q", head)
	}
	// The request goes from a socket made on a thread inside the
	// namespace (net.Dial makes it on the calling goroutine, which In
	// runs there; an http.Client would dial from another goroutine, in
	// this host's namespace).
	var page string
	netnstest.In(t, ns, func() {
		c, err := net.DialTimeout("tcp4", "198.18.0.2:8080", 10*time.Second)
		if err != nil {
			t.Errorf("connecting to 198.18.0.2:8080 in %s: %v", ns, err)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET / HTTP/1.0\r\nHost: 198.18.0.2\r\n\r\n")
		b, _ := io.ReadAll(c)
		page = string(b)
	})
	if !strings.Contains(page, "backlog serve:") {
		t.Errorf("the page: %q", page)
	}
	for _, c := range capsOf(t, cmd.Process.Pid) {
		if !strings.HasSuffix(c, " 0000000000000000") {
			t.Errorf("serve on %s still holds capabilities: %s", args, c)
		}
	}
	cmd.Process.Signal(syscall.SIGINT)
	rest, _ := io.ReadAll(stdout)
	<-done
	if code := cmd.ProcessState.ExitCode(); code != 130 || !strings.Contains(string(rest), "stopped after") {
		t.Errorf("on SIGINT: exit %d, output %q; want 130 and a summary", code, rest)
	}
	if out, err := exec.Command("ip", "-n", ns, "link", "show", "tun0").CombinedOutput(); err == nil {
		t.Errorf("tun0 is still there after serve ended:\n%s", out)
	}
}

// TestServeDropsCapabilities runs serve as root, built with cgo and
// without (the two ways it drops them), and reads every thread's
// capabilities in /proc once it serves: none is left, and it still
// serves.
func TestServeDropsCapabilities(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: capabilities to drop")
	}
	nocgo := filepath.Join(t.TempDir(), "backlog-nocgo")
	build := exec.Command("go", "build", "-o", nocgo, "github.com/backlog-dev/backlog/cmd/backlog")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, bin := range []string{requireBinary(t), nocgo} {
		cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0")
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		var addr, said string
		for sc.Scan() {
			if m := servingOn.FindStringSubmatch(sc.Text() + " "); m != nil {
				addr = m[1]
			}
			if strings.HasPrefix(sc.Text(), "capabilities:") {
				said = sc.Text()
				break
			}
		}
		if !strings.Contains(said, "all dropped") {
			t.Errorf("%s: serve says %q", filepath.Base(bin), said)
		}
		for _, c := range capsOf(t, cmd.Process.Pid) {
			if !strings.HasSuffix(c, " 0000000000000000") {
				t.Errorf("%s: a thread still holds capabilities: %s", filepath.Base(bin), c)
			}
		}
		if page := get(t, "http://"+addr+"/"); !strings.Contains(page, "backlog serve:") {
			t.Errorf("%s: the page after the drop: %q", filepath.Base(bin), page)
		}
		cmd.Process.Signal(syscall.SIGINT)
		io.Copy(io.Discard, stdout)
		cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != 130 {
			t.Errorf("%s: exit %d; want 130", filepath.Base(bin), code)
		}
		t.Logf("%s: %s", filepath.Base(bin), said)
	}
}
