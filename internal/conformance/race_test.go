package conformance

import (
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
)

// TestRacingCloseAcceptResize lets Close, Accept, SetBacklog and SetDeadline
// race each other, with clients arriving, many times over: nothing may
// deadlock, panic, or fail other than as closed or timed out, and a second
// Close must be harmless.
func TestRacingCloseAcceptResize(t *testing.T) {
	trs := []struct {
		tr tr
		p  backlog.Personality
	}{
		{netstackTransport(), backlog.MustLookup("linux")},
		{netstackTransport(), backlog.MustLookup("winnt4-server")},
		{netstackTransport(), backlog.MustLookup("gvisor")},
	}
	if runtime.GOOS == "linux" {
		host, _ := kernel.HostPersonality()
		trs = append(trs, struct {
			tr tr
			p  backlog.Personality
		}{kernelTransport(false), host}, struct {
			tr tr
			p  backlog.Personality
		}{kernelTransport(true), backlog.MustLookup("wince")})
	}
	for _, x := range trs {
		t.Run(x.tr.name+"/"+x.p.Name, func(t *testing.T) {
			t.Parallel()
			for round := 0; round < 20; round++ {
				race(t, x.tr.start(t, x.p, 4), round)
			}
		})
	}
}

func race(t *testing.T, s server, round int) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	ok := func(err error) bool {
		return err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, syscall.EINVAL)
	}
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := s.l.Accept()
				if c != nil {
					c.Close()
				}
				if errors.Is(err, net.ErrClosed) {
					return
				}
				if !ok(err) {
					t.Errorf("Accept: %v", err)
					return
				}
			}
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			if err := s.l.SetBacklog(i % 7); !ok(err) {
				t.Errorf("SetBacklog: %v", err)
			}
			select {
			case <-done:
				return
			default:
			}
		}
	}()
	go func() {
		defer wg.Done()
		d := s.l.(interface{ SetDeadline(time.Time) error })
		for i := 0; ; i++ {
			d.SetDeadline(time.Now().Add(time.Duration(i%3) * time.Millisecond))
			select {
			case <-done:
				return
			default:
			}
		}
	}()
	var clients sync.WaitGroup
	base := portRange(8)
	for i := 0; i < 8; i++ {
		clients.Add(1)
		go func() {
			defer clients.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			if c, err := s.dial(ctx, base+i); err == nil {
				c.Close()
			}
		}()
	}
	time.Sleep(time.Duration(round%5) * time.Millisecond)
	var closers sync.WaitGroup
	for i := 0; i < 2; i++ {
		closers.Add(1)
		go func() { defer closers.Done(); s.l.Close() }()
	}
	closers.Wait()
	close(done)
	finished := make(chan struct{})
	go func() { wg.Wait(); clients.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(10 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("round %d: goroutines stuck after Close:\n%s", round, buf[:runtime.Stack(buf, true)])
	}
	if err := s.l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Errorf("a third Close: %v", err)
	}
	s.shutdown()
}
