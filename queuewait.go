package backlog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"sync/atomic"
	"time"
)

// queueWaitBounds are the upper bounds of a QueueWait's buckets: from the
// millisecond the Linux kernel reports the wait in up to a minute, which
// is about as long as a client waits before its connect gives up.
var queueWaitBounds = [...]time.Duration{
	time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond,
	10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2 * time.Second, 5 * time.Second,
	10 * time.Second, 30 * time.Second, time.Minute,
}

// QueueWaitBounds returns the upper bounds of QueueWait's buckets, in
// increasing order; Buckets has one more, for waits beyond the last.
func QueueWaitBounds() []time.Duration { return queueWaitBounds[:] }

// QueueWait is a histogram of how long accepted connections waited in the
// accept queue: from the moment the connection was queued to the moment
// accept() took it. Its zero value is an empty histogram, and two
// QueueWaits compare with ==.
type QueueWait struct {
	// Count is how many accepted connections were measured.
	Count uint64
	// Sum is their waits added up.
	Sum time.Duration
	// Buckets[i] counts the waits of at most QueueWaitBounds()[i] and
	// more than the bound before it; the last counts the waits beyond the
	// last bound.
	Buckets [len(queueWaitBounds) + 1]uint64
}

// bucketOf returns the bucket a wait falls in.
func bucketOf(d time.Duration) int {
	for i, b := range queueWaitBounds {
		if d <= b {
			return i
		}
	}
	return len(queueWaitBounds)
}

// Observe adds one wait to the histogram.
func (h *QueueWait) Observe(d time.Duration) {
	d = max(d, 0)
	h.Count++
	h.Sum += d
	h.Buckets[bucketOf(d)]++
}

// Mean returns the average wait, or 0 for an empty histogram.
func (h QueueWait) Mean() time.Duration {
	if h.Count == 0 {
		return 0
	}
	return h.Sum / time.Duration(h.Count)
}

// Quantile returns the upper bound of the bucket that holds the q-th
// quantile (0 < q <= 1) of the waits: the wait that a share q of the
// connections did not exceed, rounded up to a bucket bound. It returns
// false for an empty histogram, and for a quantile beyond the last bound,
// where no bound is known.
func (h QueueWait) Quantile(q float64) (time.Duration, bool) {
	if h.Count == 0 || q <= 0 || q > 1 {
		return 0, false
	}
	rank := uint64(math.Ceil(q * float64(h.Count)))
	var seen uint64
	for i, n := range h.Buckets {
		seen += n
		if seen >= rank {
			if i == len(queueWaitBounds) {
				return 0, false
			}
			return queueWaitBounds[i], true
		}
	}
	return 0, false
}

// String summarises the histogram: "12 waits, mean 3.2ms, p50 <= 5ms, p99
// <= 50ms", or "no waits".
func (h QueueWait) String() string {
	if h.Count == 0 {
		return "no waits"
	}
	s := fmt.Sprintf("%d waits, mean %s", h.Count, h.Mean().Round(100*time.Microsecond))
	for _, q := range []struct {
		name string
		q    float64
	}{{"p50", 0.5}, {"p99", 0.99}} {
		if d, ok := h.Quantile(q.q); ok {
			s += fmt.Sprintf(", %s <= %s", q.name, d)
		} else {
			s += fmt.Sprintf(", %s > %s", q.name, queueWaitBounds[len(queueWaitBounds)-1])
		}
	}
	return s
}

// queueWaitJSON is the JSON form of a QueueWait: seconds, as Prometheus
// has them, and cumulative buckets keyed by their bound.
type queueWaitJSON struct {
	Count      uint64                `json:"count"`
	SumSeconds float64               `json:"sum_seconds"`
	Buckets    []queueWaitJSONBucket `json:"buckets"`
}

type queueWaitJSONBucket struct {
	LE    string `json:"le"` // seconds, or "+Inf"
	Count uint64 `json:"count"`
}

// MarshalJSON writes the histogram with cumulative buckets, as a
// Prometheus histogram has them: {"count":3,"sum_seconds":0.25,
// "buckets":[{"le":"0.001","count":0},…,{"le":"+Inf","count":3}]}.
func (h QueueWait) MarshalJSON() ([]byte, error) {
	j := queueWaitJSON{Count: h.Count, SumSeconds: h.Sum.Seconds()}
	var cum uint64
	for i, n := range h.Buckets {
		cum += n
		le := "+Inf"
		if i < len(queueWaitBounds) {
			le = strconv.FormatFloat(queueWaitBounds[i].Seconds(), 'g', -1, 64)
		}
		j.Buckets = append(j.Buckets, queueWaitJSONBucket{le, cum})
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (h *QueueWait) UnmarshalJSON(data []byte) error {
	var j queueWaitJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	if len(j.Buckets) != len(h.Buckets) {
		return fmt.Errorf("backlog: queue_wait has %d buckets; want %d", len(j.Buckets), len(h.Buckets))
	}
	*h = QueueWait{Count: j.Count, Sum: time.Duration(math.Round(j.SumSeconds * 1e9))}
	var prev uint64
	for i, b := range j.Buckets {
		if b.Count < prev {
			return fmt.Errorf("backlog: queue_wait buckets are not cumulative")
		}
		h.Buckets[i], prev = b.Count-prev, b.Count
	}
	return nil
}

// appendJSON writes the histogram, or null.
func (h QueueWait) appendJSON(b *bytes.Buffer, observed bool) {
	if !observed {
		b.WriteString("null")
		return
	}
	j, _ := h.MarshalJSON()
	b.Write(j)
}

// A QueueWaitRecorder gathers a QueueWait from many goroutines at once,
// without a lock: a transport calls Observe as accept() returns each
// connection, and Snapshot when it reports its Stats. Its zero value is
// ready to use.
type QueueWaitRecorder struct {
	sum     atomic.Int64
	buckets [len(queueWaitBounds) + 1]atomic.Uint64
}

// Observe records one wait.
func (r *QueueWaitRecorder) Observe(d time.Duration) {
	d = max(d, 0)
	r.sum.Add(int64(d))
	r.buckets[bucketOf(d)].Add(1)
}

// Snapshot returns the waits recorded so far. Count is the sum of the
// buckets, so the two always agree; Sum may already include a wait that a
// bucket does not yet.
func (r *QueueWaitRecorder) Snapshot() QueueWait {
	var h QueueWait
	for i := range r.buckets {
		h.Buckets[i] = r.buckets[i].Load()
		h.Count += h.Buckets[i]
	}
	h.Sum = time.Duration(r.sum.Load())
	return h
}
