package backlog

import (
	"time"
)

// The seed documents, as cited by the personalities built from them.
const (
	seedNT       = "seed 000: Microsoft KB Q127144, Windows NT WinSock Listen (Backlog) Parameter Limit"
	seedCE       = "seed 001: Windows CE listen() reference (Winsock.h, OS 1.0 and later)"
	seedKB295079 = "seed 002: Microsoft KB 295079, Server Refuses Connection That Uses Winsock Listen() Call Backlog Parameter"
	seedWSP      = "seed 003: WSPListen, Winsock service provider interface reference"
	seedTwisted  = "seed 004: Twisted-Python list, Effects of backlog parameter on listenTCP (quoting listen(2))"
)

// winsockClientSYN is a Winsock-era TCP's connect(): a 3 s initial timeout
// doubled for each of TcpMaxConnectRetransmissions retransmissions.
func winsockClientSYN(retransmissions int) Schedule {
	giveUp := 3 * time.Second * time.Duration(1<<(retransmissions+1)-1)
	return backoff(3*time.Second, doubling(retransmissions), giveUp)
}

// windowsEra fills in what every Windows-family personality shares: the
// pending-connection count starts at the connection indication (the SYN),
// so half-open connections share the limit; a SYN that finds the queue full
// is answered with a reset (seed 001: "the client will receive an error with
// an indication of WSAECONNREFUSED"; seed 002: "Windows NT issues TCP/IP
// resets on subsequent connection requests"); and the final ACK can never
// overflow, because the slot was taken at the SYN.
func windowsEra(p Personality, retransmissions int) Personality {
	p.Capacity = CapacityExact
	p.HalfOpen = HalfOpenRule{Shared: true}
	p.OnFull = SYNRefuse
	p.OnACKFull = ACKReset
	p.ClientSYN = winsockClientSYN(retransmissions)
	p.SYNACK = winsockClientSYN(retransmissions)
	return p
}

// Winsock11 is the WinSock 1.1 specification: listen() keeps 1..5 and
// SOMAXCONN is 5 (seed 000: "The WinSock version 1.1 specification states the
// maximum value for the backlog parameter is 5"). A full queue refuses; a
// second listen() updates the backlog. The client schedule is modelled on the
// Microsoft stacks of the time (3 s, doubling, 3 retransmissions).
func Winsock11() Personality {
	return windowsEra(Personality{
		Name:      "winsock1.1",
		Aliases:   []string{"winsock", "winsock11", "winsock-1.1"},
		System:    "WinSock 1.1 specification",
		Sources:   []string{seedNT, "WinSock 1.1 specification, listen()"},
		Notes:     "The specification does not say what a second listen() does to pending connections; modelled as a plain update.",
		Clamp:     Clamp{Kind: ClampNearest, Min: 1, Max: 5},
		SOMAXCONN: 5,
		Relisten:  RelistenUpdate,
	}, 3)
}

// WinNT35 is Windows NT 3.5 and 3.51: listen() accepts at most 100 (seed 000:
// "The WinSock listen() call backlog parameter under Windows NT version 3.5
// and 3.51 accepts a maximum value of 100"). Values below 1 become 1, as
// every Winsock provider replaces illegal values by the nearest legal one
// (seed 003). A second listen() updates the backlog and resets the excess
// (seed 003).
func WinNT35() Personality {
	return windowsEra(Personality{
		Name:      "winnt3.5",
		Aliases:   []string{"winnt3.51", "nt3.5", "nt3.51", "winnt35", "winnt351"},
		System:    "Windows NT 3.5 and 3.51",
		Sources:   []string{seedNT, seedWSP},
		Notes:     "SOMAXCONN is taken as winsock2.h's 0x7fffffff, so that it asks for the maximum (100); with winsock.h's value of 5 it would give 5.",
		Clamp:     Clamp{Kind: ClampNearest, Min: 1, Max: 100},
		SOMAXCONN: WinsockSOMAXCONN,
		Relisten:  RelistenUpdateResetExcess,
	}, 3)
}

// WinNT4Workstation is Windows NT 4.0 Workstation: listen() keeps at most 5
// (seed 000: "The maximum backlog parameter is 5 on Windows NT 4.0
// Workstation"), so listen(300) stores 5.
func WinNT4Workstation() Personality {
	return windowsEra(Personality{
		Name:      "winnt4-workstation",
		Aliases:   []string{"nt4-workstation", "nt4w", "winnt4w", "winnt4-ws"},
		System:    "Windows NT 4.0 Workstation",
		Sources:   []string{seedNT, seedWSP},
		Clamp:     Clamp{Kind: ClampNearest, Min: 1, Max: 5},
		SOMAXCONN: WinsockSOMAXCONN,
		Relisten:  RelistenUpdateResetExcess,
	}, 3)
}

// WinNT4Server is Windows NT 4.0 Server: listen() keeps at most 200 (seed
// 000: "and 200 on Windows NT 4.0 Server").
func WinNT4Server() Personality {
	return windowsEra(Personality{
		Name:      "winnt4-server",
		Aliases:   []string{"nt4-server", "nt4s", "winnt4s"},
		System:    "Windows NT 4.0 Server",
		Sources:   []string{seedNT, seedWSP},
		Clamp:     Clamp{Kind: ClampNearest, Min: 1, Max: 200},
		SOMAXCONN: WinsockSOMAXCONN,
		Relisten:  RelistenUpdateResetExcess,
	}, 3)
}

// WinCE is Windows CE: "As in 4.3BSD, illegal values (less than 1 or greater
// than 5) are replaced by the nearest valid value"; a full queue gives the
// client WSAECONNREFUSED; a second listen() updates the backlog and "the
// excess pending connections will be reset and dropped"; each slot needs a
// descriptor, and a later listen() or accept() refills the queue once
// descriptors are available again (all seed 001).
func WinCE() Personality {
	return windowsEra(Personality{
		Name:                 "wince",
		Aliases:              []string{"windows-ce", "ce", "win-ce"},
		System:               "Windows CE (Winsock)",
		Sources:              []string{seedCE},
		Clamp:                Clamp{Kind: ClampNearest, Min: 1, Max: 5},
		SOMAXCONN:            5,
		Relisten:             RelistenUpdateResetExcess,
		SlotsNeedDescriptors: true,
	}, 2)
}

// IrSock is Infrared Sockets on Windows CE: "The backlog parameter is
// currently limited (silently) to 2" (seed 001), whatever is asked. The rest
// is Windows CE's listen().
func IrSock() Personality {
	p := WinCE()
	p.Name = "irsock"
	p.Aliases = []string{"irda", "af_irda"}
	p.System = "Infrared Sockets (IrSock) on Windows CE"
	p.Clamp = Clamp{Kind: ClampNearest, Min: 2, Max: 2}
	p.Notes = "IrDA is not TCP; the queue rules are IrSock's and the wire is modelled as Windows CE's TCP."
	return p
}

// Win2000SP1WSD is the Winsock Direct provider of Windows 2000 Service Pack 1
// with the defect of KB 295079 (seed 002): when accept() frees a slot, "this
// increment does not take place until the program thread is preempted", so a
// client arriving in between is refused with a reset although a slot is
// free. Service Pack 2 fixed it. Otherwise it is a Windows 2000 provider: at
// most 200, and a second listen() updates and resets the excess (seed 003,
// WSPListen, minimum Windows 2000).
func Win2000SP1WSD() Personality {
	return windowsEra(Personality{
		Name:               "win2000-sp1-wsd",
		Aliases:            []string{"kb295079", "win2000-sp1", "wsd", "winsock-direct"},
		System:             "Windows 2000 SP1, Winsock Direct (KB 295079 defect)",
		Sources:            []string{seedKB295079, seedWSP},
		Notes:              "The maximum of 200 is modelled on Windows NT 4.0 Server; the article gives no number.",
		Clamp:              Clamp{Kind: ClampNearest, Min: 1, Max: 200},
		SOMAXCONN:          WinsockSOMAXCONN,
		Relisten:           RelistenUpdateResetExcess,
		DeferredSlotReturn: true,
	}, 2)
}

// WSP is a Winsock 2 service provider as WSPListen describes it (seed 003):
// "The backlog parameter is limited (silently) to a reasonable value as
// determined by the service provider. Illegal values are replaced by the
// nearest legal value"; SOMAXCONN asks for "a maximum reasonable value"; a
// full queue gives WSAECONNREFUSED; a second WSPListen updates the backlog
// and resets the excess; with no descriptors left it keeps working, and a
// later WSPListen or WSPAccept refills the queue.
func WSP() Personality {
	return windowsEra(Personality{
		Name:                 "wsp",
		Aliases:              []string{"winsock-spi", "wsplisten", "winsock2-provider"},
		System:               "Winsock 2 service provider (WSPListen)",
		Sources:              []string{seedWSP},
		Notes:                "The provider's reasonable maximum is modelled as 200, the Windows 2000 base provider's.",
		Clamp:                Clamp{Kind: ClampNearest, Min: 1, Max: 200},
		SOMAXCONN:            WinsockSOMAXCONN,
		Relisten:             RelistenUpdateResetExcess,
		SlotsNeedDescriptors: true,
	}, 2)
}

// Windows is Windows 2000 and later (the Winsock 2 listen() reference):
// SOMAXCONN (0x7fffffff) gives the provider's maximum, documented only as
// "several hundred" and modelled as 200; SOMAXCONN_HINT(N), which is -N,
// gives N kept within 200..65535 (Windows 8 and later); other values are
// kept within 1..200 (modelled). A full queue refuses with a reset. The
// current reference says a second listen() on a listening socket succeeds
// without changing the backlog; an older one said it updates and resets the
// excess. The current one is followed.
func Windows() Personality {
	return windowsEra(Personality{
		Name:      "windows",
		Aliases:   []string{"win2000", "win2k", "winxp", "win7", "win10", "win11", "windows-server"},
		System:    "Windows 2000 and later (Winsock 2)",
		Sources:   []string{"Winsock 2 listen() reference (winsock2.h), SOMAXCONN and SOMAXCONN_HINT", seedWSP},
		Notes:     "The maximum of 200 and the 1..200 clamp of plain values are modelled; the client schedule is the Windows 7 era's (3 s, doubling, 2 retransmissions).",
		Clamp:     Clamp{Kind: ClampWinsockHint, Min: 1, Max: 200, HintMin: 200, HintMax: 65535},
		SOMAXCONN: WinsockSOMAXCONN,
		Relisten:  RelistenUnchanged,
	}, 2)
}

// bsdClientSYN is the FreeBSD and XNU connect(): an initial RTO of 1 s
// multiplied by tcp_syn_backoff[] (1, 1, 1, 1, 1, 2, 4, 8, …), giving up
// when tcp_keepinit (75 s) runs out (sys/netinet/tcp_timer.c).
var bsdClientSYN = backoff(time.Second, []int{1, 1, 1, 1, 1, 2, 4, 8, 16, 32, 64}, 75*time.Second)

// BSD43 is 4.3BSD as seed 001 describes it: "illegal values (less than 1 or
// greater than 5) are replaced by the nearest valid value", SOMAXCONN being 5.
// Its sonewconn (sys/uipc_socket2.c) refuses a new connection when the
// half-open and completed connections together exceed 3/2 of the backlog, so
// ⌊3N/2⌋+1 can wait (8 for listen(5)), and tcp_input then drops the SYN
// without an answer: the client retransmits. A second listen() stores the
// new limit.
func BSD43() Personality {
	return Personality{
		Name:      "bsd4.3",
		Aliases:   []string{"4.3bsd", "bsd43", "4.3-bsd"},
		System:    "4.3BSD",
		Sources:   []string{seedCE, "4.3BSD sys/uipc_socket.c solisten, sys/uipc_socket2.c sonewconn, netinet/tcp_input.c"},
		Notes:     "The BSD source itself keeps listen(0) as 0 (which still admits one connection); the seed's 1..5 rule is followed. Retransmission: 6 s initial RTO, doubling, 75 s connection-establishment timer (modelled).",
		Clamp:     Clamp{Kind: ClampNearest, Min: 1, Max: 5},
		SOMAXCONN: 5,
		Capacity:  CapacityThreeHalves,
		HalfOpen:  HalfOpenRule{Shared: true},
		OnFull:    SYNIgnore,
		OnACKFull: ACKReset,
		Relisten:  RelistenUpdate,
		ClientSYN: backoff(6*time.Second, doubling(4), 75*time.Second),
		SYNACK:    backoff(6*time.Second, doubling(4), 75*time.Second),
	}
}

// FreeBSDConfig holds the FreeBSD sysctls a personality depends on.
type FreeBSDConfig struct {
	// Somaxconn is kern.ipc.soacceptqueue (kern.ipc.somaxconn), 128 by
	// default.
	Somaxconn int
}

// FreeBSD is FreeBSD with the given sysctls. solisten_proto
// (sys/kern/uipc_socket.c) turns a negative backlog or one above
// kern.ipc.soacceptqueue into that maximum and keeps 0 as 0; a second
// listen() stores the new value. Only completed connections count:
// sonewconn/solisten_clone refuse once more than 3/2 of the backlog wait,
// so ⌊3N/2⌋+1 can (0→1, 5→8, 128→193). Half-open connections live in the
// syncache (sys/netinet/tcp_syncache.c, 512 buckets of 30), which falls back
// to SYN cookies when full. The listen queue is not consulted at the SYN: the
// syncache answers, and when the final ACK finds the queue full
// syncache_expand fails and, with net.inet.tcp.syncache.rst_on_sock_fail=1
// (the default), tcp_input answers with RST.
func FreeBSD(c FreeBSDConfig) Personality {
	return Personality{
		Name:      "freebsd",
		System:    "FreeBSD",
		Sources:   []string{"FreeBSD sys/kern/uipc_socket.c solisten_proto, sonewconn", "FreeBSD sys/netinet/tcp_syncache.c, tcp_input.c (rst_on_sock_fail)"},
		Notes:     "Whether anything checks the listen queue at SYN time is uncertain; modelled as no check.",
		Clamp:     Clamp{Kind: ClampNegativeOrAbove, Max: c.Somaxconn},
		SOMAXCONN: 128,
		Capacity:  CapacityThreeHalves,
		HalfOpen:  HalfOpenRule{Fixed: 512 * 30, OnFull: SYNCookie},
		OnFull:    SYNAnswer,
		OnACKFull: ACKReset,
		// A cookie ACK goes through the same syncache_expand and fails
		// the same way.
		OnCookieACKFull: ACKReset,
		Relisten:        RelistenUpdate,
		ClientSYN:       bsdClientSYN,
		// syncache_timer: SYNCACHE_MAXREXMTS (3) retransmissions 1 s
		// apart, doubling; the entry is dropped at the next expiry.
		SYNACK: backoff(time.Second, doubling(3), 15*time.Second),
		// syncache_add, on a SYN that finds its entry ("Received duplicate
		// SYN, resetting timer and retransmitting SYN|ACK"): the SYN-ACK
		// goes again, sc_rxmits is set to 0 and syncache_timeout arms the
		// first step anew, so the whole schedule starts over.
		OnRepeatSYN: RepeatSYN{Resend: true, Restart: RestartSchedule},
	}
}

// DarwinConfig holds the macOS sysctls a personality depends on.
type DarwinConfig struct {
	// Somaxconn is kern.ipc.somaxconn, 128 by default. so_qlimit is a
	// short, so values above 32767 cannot be stored.
	Somaxconn int
}

// Darwin is macOS and iOS (XNU) with the given sysctls. solisten
// (bsd/kern/uipc_socket.c) turns a backlog of 0 or less, or one above
// kern.ipc.somaxconn, into that maximum. sonewconn_internal
// (bsd/kern/uipc_socket2.c) runs at the SYN and, with the defaults
// soqlencomp=0 and soqlimitcompat=1, refuses once half-open and completed
// connections together reach the backlog, so N can wait. tcp_input
// (bsd/netinet/tcp_input.c) then calls tcp_dropdropablreq to drop a half-open
// connection and tries again; with none to drop, the SYN is dropped silently.
func Darwin(c DarwinConfig) Personality {
	return Personality{
		Name:      "darwin",
		Aliases:   []string{"macos", "osx", "ios", "xnu"},
		System:    "macOS / iOS (XNU)",
		Sources:   []string{"XNU bsd/kern/uipc_socket.c solisten", "XNU bsd/kern/uipc_socket2.c sonewconn_internal", "XNU bsd/netinet/tcp_input.c tcp_dropdropablreq"},
		Notes:     "tcp_dropdropablreq chooses among older half-open connections; modelled as the oldest. The SYN-ACK schedule is modelled (tcp_backoff under the 75 s keep-init timer).",
		Clamp:     Clamp{Kind: ClampNonPositiveOrAbove, Max: c.Somaxconn},
		SOMAXCONN: 128,
		Capacity:  CapacityExact,
		HalfOpen:  HalfOpenRule{Shared: true},
		OnFull:    SYNEvict,
		OnACKFull: ACKReset,
		Relisten:  RelistenUpdate,
		ClientSYN: bsdClientSYN,
		SYNACK:    backoff(time.Second, doubling(6), 75*time.Second),
	}
}

// LinuxConfig holds the Linux sysctls a personality depends on. Every one is
// per network namespace.
type LinuxConfig struct {
	// Somaxconn is net.core.somaxconn: 4096 since Linux 5.4, 128 before.
	Somaxconn int
	// SynCookies is net.ipv4.tcp_syncookies: 0 off, 1 when the SYN queue
	// is full (the default), 2 always.
	SynCookies int
	// AbortOnOverflow is net.ipv4.tcp_abort_on_overflow: reset, instead of
	// drop, a final ACK that finds the accept queue full.
	AbortOnOverflow bool
	// MaxSynBacklog is net.ipv4.tcp_max_syn_backlog, which matters only
	// with cookies off. The kernel computes max(128, established-hash
	// entries / 128) at boot.
	MaxSynBacklog int
	// SynRetries is net.ipv4.tcp_syn_retries (6).
	SynRetries int
	// SynLinearTimeouts is net.ipv4.tcp_syn_linear_timeouts (4 since Linux
	// 6.5; 0 gives the older purely doubling schedule).
	SynLinearTimeouts int
	// SynAckRetries is net.ipv4.tcp_synack_retries (5).
	SynAckRetries int
}

// DefaultLinuxConfig returns the sysctls of a current kernel left at its
// defaults.
func DefaultLinuxConfig() LinuxConfig {
	return LinuxConfig{
		Somaxconn:         4096,
		SynCookies:        1,
		MaxSynBacklog:     2048,
		SynRetries:        6,
		SynLinearTimeouts: 4,
		SynAckRetries:     5,
	}
}

// linuxSchedule is a Linux retransmission timer: from a 1 s RTO, the first
// linear retransmissions keep the RTO (tcp_syn_linear_timeouts, SYN only),
// later ones double it up to TCP_RTO_MAX (120 s), and the attempt fails at
// the first expiry after retries+linear retransmissions
// (net/ipv4/tcp_timer.c tcp_retransmit_timer, tcp_write_timeout;
// net/ipv4/inet_connection_sock.c reqsk_timer_handler for SYN-ACKs).
func linuxSchedule(retries, linear int) Schedule {
	const rtoMax = 120 * time.Second
	rto := time.Second
	var t time.Duration
	at := make([]time.Duration, 0, retries+linear)
	for i := 0; i < retries+linear; i++ {
		t += rto
		at = append(at, t)
		if i >= linear {
			rto = min(2*rto, rtoMax)
		}
	}
	return Schedule{At: at, GiveUp: t + rto}
}

// Linux is Linux 4.4 and later with the given sysctls. __sys_listen
// (net/socket.c) compares the backlog as unsigned with net.core.somaxconn
// and silently truncates anything above it (seed 004: "If the backlog
// argument is greater than the value in /proc/sys/net/core/somaxconn, then it
// is silently truncated to that value"), so every negative value means the
// maximum and 0 stays 0. Since Linux 2.2 the backlog bounds "the queue length
// for completely established sockets waiting to be accepted" (seed 004);
// sk_acceptq_is_full (include/net/sock.h) tests "more than N", so N+1 wait.
// The SYN queue (inet_csk_reqsk_queue_is_full) holds N+1 too. In
// tcp_conn_request (net/ipv4/tcp_input.c) a SYN that finds the SYN queue full
// is dropped (TCPReqQFullDrop) or answered with a cookie
// (TCPReqQFullDoCookies) per tcp_syncookies, and a SYN that finds the accept
// queue full is dropped (ListenOverflows, ListenDrops), never reset. A final
// ACK that finds it full (tcp_v4_syn_recv_sock, tcp_check_req in
// net/ipv4/tcp_minisocks.c) is dropped, leaving the request to retransmit its
// SYN-ACK, or reset with tcp_abort_on_overflow. While more than half of
// max(8, N) requests wait, the request timer (reqsk_timer_handler,
// net/ipv4/inet_connection_sock.c) gives the old ones fewer SYN-ACKs. A
// second listen() (inet_listen) only rewrites the stored backlog.
func Linux(c LinuxConfig) Personality {
	p := Personality{
		Name:    "linux",
		Aliases: []string{"linux-5.4", "linux-6"},
		System:  "Linux 4.4 and later",
		Sources: []string{seedTwisted, "Linux net/socket.c __sys_listen", "Linux include/net/sock.h sk_acceptq_is_full", "Linux net/ipv4/tcp_input.c tcp_conn_request", "Linux net/ipv4/tcp_minisocks.c tcp_check_req", "Linux net/ipv4/inet_connection_sock.c reqsk_timer_handler"},
		Notes:   "The SYN queue holds N+1 since a January 2025 fix (N before). A cookie ACK that overflows is dropped even with tcp_abort_on_overflow=1.",
		Clamp:   Clamp{Kind: ClampUnsigned, Max: c.Somaxconn},
		// include/linux/socket.h and glibc: 4096 since 5.4, 128 before;
		// either gives the maximum while somaxconn is at most 4096.
		SOMAXCONN: 4096,
		Capacity:  CapacityPlusOne,
		HalfOpen:  HalfOpenRule{Extra: 1, OnFull: SYNIgnore, PruneOld: true},
		OnFull:    SYNIgnore,
		OnACKFull: ACKDrop,
		Relisten:  RelistenUpdate,
		ClientSYN: linuxSchedule(c.SynRetries, c.SynLinearTimeouts),
		SYNACK:    linuxSchedule(c.SynAckRetries, 0),
		// tcp_check_req, on a SYN with the request's ISN: inet_rtx_syn_ack
		// sends the SYN-ACK again and mod_timer_pending sets the request's
		// timer reqsk_timeout from now, its current step; unless
		// tcp_oow_rate_limited finds the last such answer less than
		// net.ipv4.tcp_invalid_ratelimit (HZ/2) ago, when nothing is sent.
		OnRepeatSYN: RepeatSYN{Resend: true, Restart: RestartTimer, RateLimit: 500 * time.Millisecond},
	}
	switch c.SynCookies {
	case 0:
		p.HalfOpen.MaxSynBacklog = c.MaxSynBacklog
	case 2:
		p.HalfOpen.AlwaysCookie = true
		fallthrough
	default:
		p.HalfOpen.OnFull = SYNCookie
	}
	if c.AbortOnOverflow {
		p.OnACKFull = ACKReset
	}
	return p
}

// GVisor is gVisor's netstack behind its Linux system-call layer. listen()
// (pkg/sentry/syscalls/linux/sys_socket.go) takes the backlog as unsigned,
// caps it at 1024 and adds one, so N+1 completed connections wait
// (pkg/tcpip/transport/tcp/accept.go acceptQueue.isFull). A SYN that finds
// the accept queue full is dropped (ListenOverflowSynDrop); once N handshakes
// are pending it answers with SYN cookies; a final ACK, cookie or not, that
// finds the queue full is dropped (ListenOverflowAckDrop,
// pkg/tcpip/transport/tcp/connect.go). A second listen() fails with an
// invalid-state error when more connections wait than the new capacity
// (pkg/tcpip/transport/tcp/endpoint.go listen).
func GVisor() Personality {
	return Personality{
		Name:      "gvisor",
		Aliases:   []string{"runsc", "netstack"},
		System:    "gVisor (netstack behind the Sentry)",
		Sources:   []string{"gVisor pkg/sentry/syscalls/linux/sys_socket.go Listen", "gVisor pkg/tcpip/transport/tcp/accept.go handleListenSegment", "gVisor pkg/tcpip/transport/tcp/endpoint.go listen"},
		Clamp:     Clamp{Kind: ClampUnsigned, Max: 1024},
		SOMAXCONN: 4096,
		Capacity:  CapacityPlusOne,
		HalfOpen:  HalfOpenRule{Extra: 0, OnFull: SYNCookie},
		OnFull:    SYNIgnore,
		OnACKFull: ACKDrop,
		Relisten:  RelistenFail,
		ClientSYN: linuxSchedule(6, 0),
		SYNACK:    linuxSchedule(6, 0),
	}
}

// LwIP is lwIP with TCP_LISTEN_BACKLOG=1. lwip_listen (src/api/sockets.c)
// keeps the backlog within 0..255, as it is stored in a u8_t, and
// tcp_listen_with_backlog_and_err (src/core/tcp.c) stores 0 as 1.
// accepts_pending counts a connection from its SYN until accept()
// (tcp_backlog_delayed, tcp_backlog_accepted), and tcp_listen_input
// (src/core/tcp_in.c) drops a SYN without an answer once it reaches the
// backlog. Listening again updates the backlog (tcp_backlog_set via
// lwip_netconn_do_listen). Its client sends SYNs 3 s apart without backing
// off (TCP_SYNMAXRTX=6), and a half-open connection is dropped after
// TCP_SYN_RCVD_TIMEOUT (20 s).
func LwIP() Personality {
	return Personality{
		Name:      "lwip",
		Aliases:   []string{"lwip2"},
		System:    "lwIP (TCP_LISTEN_BACKLOG=1)",
		Sources:   []string{"lwIP src/api/sockets.c lwip_listen", "lwIP src/core/tcp.c tcp_listen_with_backlog_and_err, tcp_backlog_set", "lwIP src/core/tcp_in.c tcp_listen_input"},
		Notes:     "The SYN-ACK retransmission times within the 20 s are modelled.",
		Clamp:     Clamp{Kind: ClampNearest, Min: 1, Max: 255},
		SOMAXCONN: 255,
		Capacity:  CapacityExact,
		HalfOpen:  HalfOpenRule{Shared: true},
		OnFull:    SYNIgnore,
		OnACKFull: ACKReset,
		Relisten:  RelistenUpdate,
		ClientSYN: backoff(3*time.Second, []int{1, 1, 1, 1, 1, 1}, 21*time.Second),
		SYNACK:    backoff(3*time.Second, []int{1, 2}, 20*time.Second),
	}
}
