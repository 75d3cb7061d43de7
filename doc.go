// Package backlog is the TCP listen backlog as data: every system's listen()
// rules as a [Personality], and the pending-connection queue those rules
// govern as a [Queue] that returns outcomes instead of acting on them.
//
// The package is pure Go: no system calls, no goroutines, no network. The
// transports build on it: package kernel puts a real socket's queue under
// the backlog you ask for (and, with a personality, under another system's
// rules), package netstack enforces a personality on a user-space TCP/IP
// stack, SYN by SYN. Both return a [Listener].
//
// # The systems
//
// [All] lists the personalities, [Lookup] finds one by name, alias or with
// parameters ("linux:somaxconn=128,syncookies=0"), and [Host] is the system
// this program runs on. Every rule cites its source: the five seed
// documents the project started from (Microsoft KB Q127144 and KB 295079,
// the Windows CE listen() and WSPListen references, and a Twisted list
// message quoting Linux's listen(2)), kernel sources, or measurements.
//
// # Saying the backlog
//
// listen(fd, n) takes any C int, and every value means something: 0 is a
// backlog of 0 (one waiting connection on Linux), a negative value the
// system's maximum on every system modelled here. A ListenConfig in package
// kernel or package netstack has to give its zero value a meaning too, and,
// as net.Listen does, takes 0 to mean the system's default, the largest
// backlog it allows. So, in a ListenConfig's Backlog and nowhere else:
//
//   - 0 means the default;
//   - [ZeroBacklog] asks for 0 itself, and [Exactly] turns a number into
//     the value that asks for it;
//   - [MaxBacklog] (or any negative value) asks for the maximum;
//   - anything else is passed to listen() as it is, saturated to a C int.
//
// [Listener.SetBacklog], like listen() itself, takes the number as it is:
// SetBacklog(0) asks for 0. [ListenRequest] is the rule both transports
// apply.
//
// # Observing a queue
//
// [Stats] counts what a queue did with the names Linux gives the same
// events. What a transport cannot observe, such as the half-open
// connections of a kernel socket on systems that do not report them, is
// marked in [Stats.Unobserved] and shown as null or "n/a", never as a 0
// that reads as a fact.
//
// # Overload
//
// A larger backlog keeps SYNs from being dropped, and under overload that
// is the trap: the queue turns the excess into waiting, and by the time
// accept() reaches a connection its client may be gone. [Overload] is a
// policy that bounds the wait instead, by CoDel's rule as Facebook applies
// it to request queues: once the oldest waiting connection has waited past
// a target for a whole interval, every connection past the target is
// reset rather than served, and, optionally, the newest is served first
// and the backlog is sized to the accept rate times the target. A
// [Shedder] is the rule as a state machine that reads no clock; package
// kernel and package netstack apply it at Accept and count what it resets
// in [Stats.Overdue].
package backlog
