package backlog

import "math"

// TwistedDefaultBacklog is the backlog Twisted's listenTCP passes to listen()
// unless told otherwise (seed 004: it "exactly corresponds to the "backlog"
// parameter of the BSD socket API").
const TwistedDefaultBacklog = 50

// A Default is the backlog a runtime, framework or server passes to listen()
// when its user does not choose one.
type Default struct {
	// Who passes it.
	Who string
	// Backlog is the value passed. math.MaxInt32 stands for "the host's
	// maximum", which such software reads from the system or asks for
	// with SOMAXCONN.
	Backlog int
	// Rule says how the value is chosen, when it is not a constant.
	Rule string
}

// Defaults lists the backlogs other ecosystems pick, so that explain can say
// what each becomes under a personality. Go's own net.Listen gives no choice
// at all (golang/go#39000).
var Defaults = []Default{
	{Who: "Go net.Listen", Backlog: math.MaxInt32, Rule: "net.core.somaxconn (128 if unreadable); not settable"},
	{Who: "Twisted listenTCP", Backlog: TwistedDefaultBacklog},
	{Who: "Python socket.listen()", Backlog: 128, Rule: "min(SOMAXCONN, 128)"},
	{Who: "Node.js server.listen", Backlog: 511},
	{Who: "nginx", Backlog: 511, Rule: "511; -1 on FreeBSD and macOS"},
	{Who: "Redis tcp-backlog", Backlog: 511, Rule: "511, with a warning when somaxconn is lower"},
	{Who: "Java ServerSocket", Backlog: 50},
	{Who: ".NET Socket.Listen()", Backlog: math.MaxInt32, Rule: "the OS maximum (SOMAXCONN)"},
	{Who: "Rust std TcpListener", Backlog: 128},
	{Who: "Envoy", Backlog: math.MaxInt32, Rule: "somaxconn on Linux, 128 elsewhere"},
}
