package netstack

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
)

// echoOneAndClose accepts until the listener closes; each connection gets
// its first byte echoed, then is closed.
func echoOneAndClose(l net.Listener) (done chan struct{}) {
	done = make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				var b [1]byte
				if _, err := io.ReadFull(c, b[:]); err == nil {
					c.Write(b[:])
				}
				c.Close()
			}()
		}
	}()
	return done
}

// cookieBench is a server host with two listeners under Linux's rules:
// port 80 answers every SYN with a cookie (tcp_syncookies=2), port 81 none
// (tcp_syncookies=0), both echoing one byte.
func cookieBench(tb testing.TB) (cli *Host, cookies, plain dialFunc, stop func()) {
	n := NewNetwork(nil)
	srv, err := n.NewHost()
	if err != nil {
		tb.Fatal(err)
	}
	cli, err = n.NewHost()
	if err != nil {
		tb.Fatal(err)
	}
	var done []chan struct{}
	var ls []*Listener
	for port, name := range map[string]string{"80": "linux:syncookies=2", "81": "linux:syncookies=0"} {
		l, err := srv.Listen(context.Background(), "tcp4", ":"+port, &ListenConfig{Personality: backlog.MustLookup(name), Backlog: benchBacklog})
		if err != nil {
			tb.Fatal(err)
		}
		ls = append(ls, l)
		done = append(done, echoOneAndClose(l))
	}
	dial := func(port string) dialFunc {
		return func(ctx context.Context) (net.Conn, error) {
			c, err := cli.Dial(ctx, "tcp", serverAddr+":"+port)
			if err != nil {
				return nil, err
			}
			var b [1]byte
			if _, err := c.Write([]byte{'x'}); err == nil {
				_, err = io.ReadFull(c, b[:])
			}
			if err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		}
	}
	return cli, dial("80"), dial("81"), func() {
		for _, l := range ls {
			l.Close()
		}
		for _, d := range done {
			<-d
		}
		n.Close()
	}
}

// BenchmarkCookieSetup measures a cookie-born connection's setup and first
// echoed byte (connect, write one byte, read it back) against a normal
// connection's, on the same host, taking turns as BenchmarkSetup does:
// ratio is the normal connections' time over the cookie-born ones'.
func BenchmarkCookieSetup(b *testing.B) {
	_, cookies, plain, stop := cookieBench(b)
	defer stop()
	benchSetup(b, cookies, plain)
}

// cookieMemConns is how many connections BenchmarkCookieMemory opens and
// closes.
const cookieMemConns = 5000

// BenchmarkCookieMemory opens and closes cookieMemConns connections, one
// after another, to each listener of cookieBench, and reports the growth of
// the live heap they leave behind (KiB, for the cookie-born ones) and
// cookie-born over normal (ratio): the closed connections' TIME-WAIT state
// in gVisor, and for cookie-born ones their translations waiting to retire.
func BenchmarkCookieMemory(b *testing.B) {
	var kib, ratio float64
	iters := 0
	for b.Loop() {
		var grew [2]float64
		for i, which := range []string{"plain", "cookies"} {
			_, cookies, plain, stop := cookieBench(b)
			dial := plain
			if which == "cookies" {
				dial = cookies
			}
			before := heapAfterGC()
			for range cookieMemConns {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				c, err := dial(ctx)
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				c.Read(make([]byte, 1)) // the server's close
				c.Close()
			}
			grew[i] = float64(heapAfterGC()) - float64(before)
			stop()
		}
		kib += grew[1] / 1024
		ratio += grew[1] / grew[0]
		iters++
	}
	b.ReportMetric(kib/float64(iters), "heap-KiB")
	b.ReportMetric(ratio/float64(iters), "ratio")
}
