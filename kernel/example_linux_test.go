package kernel_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
)

// A web server whose listen backlog is 1024, whatever net.Listen would
// have chosen, served by http.Serve like any listener. (The output assumes
// net.core.somaxconn is at least 1024, as it is by default since Linux 5.4;
// otherwise the stored backlog is lower and a warning is logged.)
func Example() {
	ln, err := kernel.Listen("tcp", "127.0.0.1:0", 1024)
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error)
	go func() {
		served <- http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, "hello from a backlog of", ln.Backlog())
		}))
	}()

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(string(body))

	ln.Close()
	<-served
	// Output:
	// hello from a backlog of 1024
}

// Resizing the backlog of a live listener: the kernel stores the new value
// at once, and connections already waiting stay.
func ExampleListener_SetBacklog() {
	ln, err := kernel.Listen("tcp4", "127.0.0.1:0", 8)
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	fmt.Println("backlog:", ln.Backlog())

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	if err := ln.SetBacklog(16); err != nil {
		log.Fatal(err)
	}
	s := ln.Stats()
	fmt.Println("backlog:", s.Backlog, "capacity:", s.Capacity)
	// Output:
	// backlog: 8
	// backlog: 16 capacity: 17
}

// Running Windows NT 4.0 Workstation's listen() rules on the Linux kernel:
// listen(100) keeps 5, and a sixth waiting client would be reset.
func ExampleListenConfig_personality() {
	nt4 := backlog.MustLookup("winnt4-workstation")
	lc := kernel.ListenConfig{Backlog: 100, Personality: nt4, Emulation: kernel.EmulateAfterAccept, Logger: discard}
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	s := ln.Stats()
	fmt.Println("requested:", s.Requested, "stored:", s.Backlog, "capacity:", s.Capacity)
	// Output:
	// requested: 100 stored: 5 capacity: 5
}

// Serving the clients who are still waiting: once the queue stands, a
// connection that waited past 50 ms is reset instead of served, and while
// a queue forms the newest is served first. A client that arrives at an
// idle server is served as always.
func ExampleListenConfig_overload() {
	lc := kernel.ListenConfig{Overload: backlog.Overload{Target: 50 * time.Millisecond, LIFO: true}}
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	conn, err := ln.Accept()
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	fmt.Println("served:", conn.RemoteAddr().String() == c.LocalAddr().String(), "overdue:", ln.Stats().Overdue)
	// Output:
	// served: true overdue: 0
}

// Listing the host's listening sockets, as `ss -ltnp` does, with the
// namespace's counters: what `backlog top` shows.
func ExampleSockets() {
	socks, err := kernel.Sockets()
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range socks {
		fmt.Printf("%-22s %5d/%-5d drops %-4d %s[%d]\n", s, s.Len, s.Backlog, s.Drops, s.Process, s.PID)
	}
	c, err := kernel.ReadCounters()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("ListenOverflows", c.ListenOverflows, "ListenDrops", c.ListenDrops)
}
