package backlog_test

import (
	"fmt"

	"github.com/backlog-dev/backlog"
)

// What listen(300) becomes on a few systems.
func ExamplePersonality_Listen() {
	for _, name := range []string{"winnt4-workstation", "winnt4-server", "linux", "freebsd", "irsock"} {
		p := backlog.MustLookup(name)
		stored, capacity := p.Listen(300)
		fmt.Printf("%-18s listen(300): backlog %3d, %3d can wait, full: %s\n", p.Name, stored, capacity, p.FullVerdict())
	}
	// Output:
	// winnt4-workstation listen(300): backlog   5,   5 can wait, full: refuse
	// winnt4-server      listen(300): backlog 200, 200 can wait, full: refuse
	// linux              listen(300): backlog 300, 301 can wait, full: ignore
	// freebsd            listen(300): backlog 128, 193 can wait, full: refuse
	// irsock             listen(300): backlog   2,   2 can wait, full: refuse
}

// A Windows NT 4.0 Workstation queue with backlog 5 refuses the sixth
// connection; after one accept() the next one gets the freed slot at once.
func ExampleQueue() {
	q, err := backlog.NewQueue[string](backlog.MustLookup("winnt4-workstation"), 5)
	if err != nil {
		panic(err)
	}
	for i := 1; i <= 6; i++ {
		o, _, _ := q.Offer(fmt.Sprintf("client %d", i))
		fmt.Printf("client %d: %v\n", i, o)
	}
	c, _ := q.Accept()
	fmt.Println("accepted", c)
	o, _, _ := q.Offer("client 7")
	fmt.Println("client 7:", o)
	// Output:
	// client 1: queued
	// client 2: queued
	// client 3: queued
	// client 4: queued
	// client 5: queued
	// client 6: refused
	// accepted client 1
	// client 7: queued
}

// Parameters model a host's sysctls.
func ExampleLookup() {
	p, err := backlog.Lookup("linux:somaxconn=128,abort_on_overflow=1")
	if err != nil {
		panic(err)
	}
	fmt.Println(p, p.Stored(1024), p.OnACKFull)
	_, err = backlog.Lookup("plan9")
	fmt.Println(err != nil)
	// Output:
	// linux:somaxconn=128,abort_on_overflow=1 128 reset
	// true
}
