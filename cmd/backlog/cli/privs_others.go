//go:build !linux

package cli

// dropPrivileges does nothing where serve needs no privilege to set up:
// the TUN transport is Linux only.
func dropPrivileges(bool) string { return "" }
