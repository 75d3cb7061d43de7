// Package netstack runs gVisor's user-space TCP/IP stack with listeners
// whose every SYN and final ACK is decided by a backlog.Queue under a
// personality, so that another system's listen() rules hold exactly on a
// real TCP wire: a full Windows NT 4.0 queue answers the sixth client with a
// reset, a full Linux queue drops its SYN and the client retransmits, macOS
// evicts a half-open connection, and each system's SYN-ACK schedule is kept.
//
// A [Host] is one stack with its addresses. Hosts live on an in-process
// [Network] (see [NewNetwork]), where nothing leaves the process and no
// privilege is needed, or on a TUN device ([AttachTUN], Linux, root), where
// programs using the host kernel's TCP are the clients. [Host.Listen]
// returns a [Listener], a net.Listener that implements backlog.Listener;
// [Host.Dial] connects with an ordinary gVisor TCP client. Errors wrap the
// errno a Linux socket would give.
//
// # How the rules are enforced
//
// gVisor's own listening endpoint does the handshakes, with a queue too large
// to ever decide anything. Between the host's NIC and its link sits a gate
// that sees every packet first. For a SYN to a listening port it asks the
// listener's queue and passes the SYN to the stack, drops it, answers it with
// a reset, or answers it with a SYN cookie it computes itself (in the layout
// of Linux's net/ipv4/syncookies.c). For a final ACK it passes it (the
// connection is queued), drops it (the queue is full; the SYN-ACK will be
// sent again) or resets it. SYN-ACKs leaving the host are sent again on the
// personality's schedule instead of gVisor's, and a connection born from a
// valid cookie is rebuilt inside gVisor and its sequence numbers translated,
// as Linux's SYNPROXY target does. The accept side (deadlines, Close, listen()
// again, the KB 295079 quantum) is the one package kernel's emulation uses.
//
// # What is not exact
//
// A SYN-ACK the gate sends again, on the schedule or for a repeated SYN, is
// the first one's bytes, its timestamps included: Linux and FreeBSD write a
// fresh TSval, and FreeBSD echoes the repeated SYN's. A client that sends its
// SYN again while its handshake is half-open is answered as
// Personality.OnRepeatSYN says where the rule is known (Linux's
// tcp_check_req, FreeBSD's syncache_add); elsewhere it gets gVisor's answer,
// at most a bare ACK, and lwIP's, which sends its SYN-ACK again (tcp_rexmit
// in tcp_process) and counts it towards its backoff, is not modelled. A
// connection the client resets while the gate rebuilds it from a SYN
// cookie is counted as accepted when Accept passes it by, where Linux's
// accept() would return it, reset.
package netstack
