package netstack

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestChurn: clients that connect and at once close or reset, many at a
// time, against a small queue, with SYN cookies sometimes and always. The
// application accepts everything. Once the clients are done, the books
// balance: the queue is empty and every connection it queued was
// accepted, none left behind for an Accept to wait on. Two faults of the
// cookie path broke this under such load (TestCookieResetBehindACK,
// TestLostHandshakeNotAwaited); under -race the gate's locks are checked
// too. Bounded: 320 connections a personality.
func TestChurn(t *testing.T) {
	for _, personality := range []string{"linux", "linux:syncookies=2", "gvisor"} {
		t.Run(personality, func(t *testing.T) {
			_, srv, cli := pair(t, nil)
			l := listen(t, srv, personality, 4)
			accepted := closeAll(l)
			const clients, each = 16, 20
			var wg sync.WaitGroup
			for i := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(i), 1))
					for range each {
						ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
						c, err := cli.Dial(ctx, "tcp", serverAddr+":80")
						cancel()
						if err != nil {
							continue // dropped at a full queue: the client gave up
						}
						if r.IntN(2) == 0 {
							c.(*Conn).Abort()
						} else {
							c.Close()
						}
					}
				}()
			}
			wg.Wait()
			// Half-open handshakes of clients that gave up may stay until
			// their schedule ends; what completed must not. (A final ACK
			// may still be on its way when the last client returns.)
			waitFor(t, "the application to take every queued connection", func() bool {
				st := l.Stats()
				return st.Len == 0 && st.Accepted == st.Queued
			})
			if st := l.Stats(); st.Queued == 0 {
				t.Errorf("no connection was queued: %v", st)
			}
			l.Close()
			<-accepted
		})
	}
}
