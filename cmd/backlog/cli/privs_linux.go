package cli

import (
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// privilegesDroppable is false in the package's tests, whose serve runs
// in the test process: they test the drop on the built command.
var privilegesDroppable = true

// nobody is the user a root process becomes when it cannot clear its
// capabilities thread by thread.
const nobody = 65534

// dropPrivileges gives up every capability the process holds, on every
// thread, once serve has opened its TUN device and bound its sockets:
// neither needs a capability to be used, and closing a TUN device that
// serve created removes it without one. It returns a line saying what it
// did, or "" when there was nothing to drop.
//
// capset(2) acts on the calling thread only, so it is made on every
// thread of the process (syscall.AllThreadsSyscall), with no_new_privs so
// that no exec can bring capabilities back. A binary built with cgo
// cannot do that (AllThreadsSyscall fails with ENOTSUP); root then
// becomes nobody instead, through setresuid, which Go applies to every
// thread: once none of its user IDs is 0, the kernel clears every
// capability (capabilities(7), "Effect of user ID changes on
// capabilities").
func dropPrivileges(keep bool) string {
	if !privilegesDroppable {
		return ""
	}
	held, err := capabilitiesHeld()
	if err != nil || !held {
		return ""
	}
	if keep {
		return "capabilities kept (--keep-capabilities)"
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var none [2]unix.CapUserData
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&none[0])), 0)
	if errno == 0 {
		syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0)
		return "capabilities: all dropped, on every thread, once set up"
	}
	if errno != syscall.ENOTSUP {
		return fmt.Sprintf("capabilities: could not be dropped: capset: %v", errno)
	}
	if syscall.Getuid() != 0 && syscall.Geteuid() != 0 {
		return "capabilities: could not be dropped on every thread of a cgo build; run as root, or build with CGO_ENABLED=0"
	}
	unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0)
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Sprintf("capabilities: could not be dropped: setgroups: %v", err)
	}
	if err := syscall.Setresgid(nobody, nobody, nobody); err != nil {
		return fmt.Sprintf("capabilities: could not be dropped: setresgid: %v", err)
	}
	if err := syscall.Setresuid(nobody, nobody, nobody); err != nil {
		return fmt.Sprintf("capabilities: could not be dropped: setresuid: %v", err)
	}
	unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
	return fmt.Sprintf("capabilities: all dropped once set up; now user %d (nobody)", nobody)
}

// capabilitiesHeld reports whether the calling thread has any capability
// permitted.
func capabilitiesHeld() (bool, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false, err
	}
	return data[0].Permitted|data[1].Permitted|data[0].Effective|data[1].Effective != 0, nil
}
