package netstack

import (
	"context"
	"net"
	"testing"
	"time"
)

// BenchmarkEcho measures an established connection's data path: each
// operation writes one byte from the client and reads it back from a server
// that echoes it. impl=backlog is a connection of this package's listener
// (its Conn, every packet through the gate), impl=gvisor one of gVisor's
// own listener on a host with no gate (gonet's TCPConn); the client is the
// same host's in both. allocs/op is the whole process's, client, network
// and server together: what the listener adds to gVisor's own is the
// difference between the two.
func BenchmarkEcho(b *testing.B) {
	n, srv, cli := pair(b, nil)
	bare, err := n.newHost(false)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		l    net.Listener
		addr string
	}{
		{"impl=gvisor", nativeListen(b, bare, 80, benchBacklog), "198.18.0.3:80"},
		{"impl=backlog", listen(b, srv, "linux", benchBacklog), serverAddr + ":80"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			done := make(chan struct{})
			go func() {
				defer close(done)
				c, err := tc.l.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				var buf [1]byte
				for {
					if _, err := c.Read(buf[:]); err != nil {
						return
					}
					if _, err := c.Write(buf[:]); err != nil {
						return
					}
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := cli.Dial(ctx, "tcp", tc.addr)
			if err != nil {
				b.Fatal(err)
			}
			var buf [1]byte
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(buf[:]); err != nil {
					b.Fatal(err)
				}
				if _, err := c.Read(buf[:]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			c.Close()
			<-done
		})
	}
}
