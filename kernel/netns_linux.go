package kernel

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// netnsDirs are where named namespaces are bind-mounted (iproute2 uses
// /run/netns; /var/run is usually a link to it).
var netnsDirs = []string{"/run/netns", "/var/run/netns"}

// CurrentNamespace returns the network namespace of the calling thread.
func CurrentNamespace() (Namespace, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return Namespace{}, os.NewSyscallError("stat /proc/thread-self/ns/net", err)
	}
	return Namespace{Inode: st.Ino, Self: true, path: "/proc/thread-self/ns/net"}, nil
}

// OpenNamespace returns the network namespace a path leads to: a name
// under /run/netns ("blue" or "/run/netns/blue") or /proc/PID/ns/net.
func OpenNamespace(path string) (Namespace, error) {
	name := ""
	if !strings.Contains(path, "/") {
		name, path = path, netnsDirs[0]+"/"+path
	} else if dir, base, ok := strings.Cut(path, "/netns/"); ok && (dir == "/run" || dir == "/var/run") {
		name = base
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return Namespace{}, os.NewSyscallError("stat "+path, err)
	}
	self, err := CurrentNamespace()
	if err == nil && self.Inode == st.Ino {
		self.Name = name
		return self, nil
	}
	return Namespace{Inode: st.Ino, Name: name, path: path}, nil
}

// Namespaces lists the network namespaces of the host that this process
// can see: the calling thread's, every one named under /run/netns, and
// every one a process is in (/proc/PID/ns/net), each once, the calling
// thread's first, then by inode. Reading another user's /proc/PID/ns/net
// needs CAP_SYS_PTRACE; namespaces that cannot be read are left out, as
// are processes that vanish meanwhile.
func Namespaces() ([]Namespace, error) {
	self, err := CurrentNamespace()
	if err != nil {
		return nil, err
	}
	byInode := map[uint64]*Namespace{self.Inode: &self}
	// at returns the namespace path leads to, found before or new.
	at := func(path string) *Namespace {
		var st unix.Stat_t
		if unix.Stat(path, &st) != nil {
			return nil
		}
		n := byInode[st.Ino]
		if n == nil {
			n = &Namespace{Inode: st.Ino, path: path}
			byInode[st.Ino] = n
		}
		return n
	}
	for _, dir := range netnsDirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			path := dir + "/" + e.Name()
			if n := at(path); n != nil && n.Name == "" {
				n.Name, n.path = e.Name(), path
			}
		}
	}
	for _, pid := range pids() {
		if n := at("/proc/" + strconv.Itoa(pid) + "/ns/net"); n != nil && n.PID == 0 {
			n.PID, n.Process = pid, comm(pid)
		}
	}
	out := make([]Namespace, 0, len(byInode))
	for _, n := range byInode {
		out = append(out, *n)
	}
	slices.SortFunc(out, func(a, b Namespace) int {
		switch {
		case a.Self != b.Self:
			if a.Self {
				return -1
			}
			return 1
		case a.Inode < b.Inode:
			return -1
		case a.Inode > b.Inode:
			return 1
		}
		return 0
	})
	return out, nil
}

// Do runs f in the namespace, on an OS thread of its own that enters it
// with setns (which needs CAP_SYS_ADMIN) and is discarded afterwards, so
// that no other goroutine ever runs in the namespace by mistake; for the
// calling thread's own namespace f runs on the calling goroutine. Sockets,
// ReadCounters and the rest read the namespace of the thread they run on.
func (n Namespace) Do(f func()) error {
	if n.Self {
		f()
		return nil
	}
	if n.path == "" {
		return fmt.Errorf("kernel: namespace %s: no path to open it by", n.Label())
	}
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends with the goroutine.
		runtime.LockOSThread()
		fd, err := unix.Open(n.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- os.NewSyscallError("open "+n.path, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			done <- os.NewSyscallError("setns "+n.Label(), err)
			return
		}
		var st unix.Stat_t
		if unix.Stat("/proc/thread-self/ns/net", &st) != nil || st.Ino != n.Inode {
			// The name or the process now points elsewhere.
			done <- fmt.Errorf("kernel: namespace %s: %w", n.Label(), os.ErrNotExist)
			return
		}
		f()
		done <- nil
	}()
	return <-done
}

// pids lists the processes in /proc, in ascending order.
func pids() []int {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	out := make([]int, 0, len(names))
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err == nil {
			out = append(out, pid)
		}
	}
	slices.Sort(out)
	return out
}

// comm returns a process's name (/proc/PID/comm), or "".
func comm(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(b), "\n")
}
