package iocp

// A pool's counters (PoolStats) and timings (WithTimings): each worker
// writes its own, and Stats sums them.

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// PoolStats is a snapshot of a pool's counters, summed over its workers
// one after another; see Port.Stats for the port's.
type PoolStats struct {
	Workers  int    // the pool's workers now
	Grown    uint64 // workers started beyond NewPool's n while all were blocked
	Retired  uint64 // of those, the ones that retired, without a packet for WithIdleTimeout
	Handled  uint64 // packets, completions and tasks handled, panics included
	Panicked uint64 // of those, the handlers and tasks that panicked or called runtime.Goexit
	Failed   uint64 // tasks of Go, Call and Group that returned an error
	// Cancelled counts the functions of Call and Group that did not run
	// because their caller's context had ended first.
	Cancelled uint64
	// InFlight counts the handlers, callbacks and tasks running now.
	InFlight int
	// Stalled counts the handlers running now for longer than the limit
	// of WithStallReport; 0 without it.
	Stalled int
	// With WithTimings, QueueWait has how long packets waited, from the
	// Post, PostBatch or completion that queued them to the Get of the
	// worker that took them, and Handling how long their handlers ran.
	// On a native port the kernel's queue keeps no time: QueueWait
	// stays empty.
	QueueWait, Handling Histogram
}

// Stats returns the pool's counters.
func (pl *Pool) Stats() PoolStats {
	s := PoolStats{Workers: pl.Workers(), Grown: pl.grown.Load(), Retired: pl.retired.Load()}
	now := int64(time.Since(pl.epoch))
	for _, c := range *pl.counters.Load() {
		st := c.started.Load()
		if st != 0 {
			s.InFlight++
		}
		if pl.onStall != nil && st != 0 && time.Duration(now-st) > pl.stallLimit {
			s.Stalled++
		}
		if c.t != nil {
			s.QueueWait.add(&c.t.wait)
			s.Handling.add(&c.t.run)
		}
		s.Handled += c.handled.Load()
		s.Panicked += c.panicked.Load()
		s.Failed += c.failed.Load()
		s.Cancelled += c.cancelled.Load()
	}
	return s
}

// workerCounters are one worker's counts, written by its goroutine only
// (a load and a store, no read-modify-write on a shared line) and summed by
// Stats. Each sits on a cache line of its own: at 64 cores a pool-wide
// counter would be one more line that every packet moves.
type workerCounters struct {
	handled, panicked, failed, cancelled atomic.Uint64
	// started is when the handler running now started, in nanoseconds
	// from Pool.epoch, with its low bit set, or 1 if the pool does not
	// time handlers (see begin); 0 when none runs.
	started  atomic.Int64
	reported int64    // the started value last reported; the watcher's own
	t        *timings // WithTimings; read-only
	// w is the worker that runs with these counters now, for the watcher
	// to stall (WithStallAsBlocked); it changes when a worker is replaced.
	w atomic.Pointer[Worker]
	// region numbers the Blocking region that keeps its slot now, 0 when
	// none; paced says the pacer freed its slot (pace.go).
	region atomic.Int64
	paced  atomic.Bool
	_      [cacheLine - 80]byte
}

// newCounters returns a new worker's counters, with timings if the pool
// keeps them.
func (pl *Pool) newCounters() *workerCounters {
	c := new(workerCounters)
	if pl.timings {
		c.t = new(timings)
	}
	return c
}

// add counts one on a counter that only the calling worker writes.
func (c *workerCounters) add(n *atomic.Uint64) { n.Store(n.Load() + 1) }

// begin marks the start of a handler on the worker whose counters are c,
// records the packet's queue wait (WithTimings), and returns the start's
// time: nanoseconds from the pool's epoch with WithTimings or
// WithStallReport, and 0 without, which costs no clock read.
func (pl *Pool) begin(c *workerCounters, w *Worker) int64 {
	var start int64
	if pl.timed {
		start = int64(time.Since(pl.epoch))
		if c.t != nil && w.at[0] != 0 {
			c.t.wait.record(start - (w.at[0] - 1)) // see Port.now
		}
	}
	c.started.Store(start | 1) // never 0, which says no handler runs
	return start
}

// end marks the end of the handler that begin marked.
func (pl *Pool) end(c *workerCounters, start int64) {
	c.started.Store(0)
	if c.t != nil {
		c.t.run.record(int64(time.Since(pl.epoch)) - start)
	}
}

// HistogramBuckets is the number of buckets of a Histogram.
const HistogramBuckets = 32

// histShift puts the first bucket's bound at 1<<histShift ns, 128 ns:
// finer than that, the clock reads themselves are most of what is measured.
const histShift = 7

// A Histogram counts durations in buckets whose bounds are powers of two:
// Buckets[0] counts those under 128 ns, Buckets[i] those from Bound(i-1)
// to under Bound(i), each bound twice the one before, and the last bucket
// everything from about 137 s on. A bucket says within a factor of two
// how long something took, which is what a latency's tail needs, at a
// fixed size and with no allocation.
type Histogram struct {
	Count   uint64                   // durations counted
	Total   time.Duration            // their sum
	Buckets [HistogramBuckets]uint64 // their counts, by Bound
}

// Bound returns the upper bound of bucket i: the durations it counts are
// below it. The last bucket has none, and its Bound is the largest
// time.Duration. The bounds are the same for every Histogram, empty or not.
func (h *Histogram) Bound(i int) time.Duration {
	if i >= HistogramBuckets-1 {
		return math.MaxInt64
	}
	return time.Duration(1) << (histShift + i)
}

// bucket returns the bucket of a duration of d nanoseconds.
func bucket(d int64) int {
	if d < 0 {
		d = 0 // a clock that went back: the monotonic clock does not
	}
	return min(bits.Len64(uint64(d)>>histShift), HistogramBuckets-1)
}

// Quantile returns the Bound of the bucket that holds the q-quantile of
// the durations counted (q from 0 to 1; the median is 0.5): an upper
// bound on it, within a factor of two. It returns 0 for an empty
// histogram.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.Count == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.Count)))
	rank = max(rank, 1)
	var seen uint64
	for i, n := range h.Buckets {
		if seen += n; seen >= rank {
			return h.Bound(i)
		}
	}
	return h.Bound(HistogramBuckets - 1)
}

// Mean returns the mean of the durations counted, 0 for none.
func (h *Histogram) Mean() time.Duration {
	if h.Count == 0 {
		return 0
	}
	return h.Total / time.Duration(h.Count)
}

// add adds o's counts to h.
func (h *Histogram) add(o *histogram) {
	h.Count += o.count.Load()
	h.Total += time.Duration(o.total.Load())
	for i := range h.Buckets {
		h.Buckets[i] += o.buckets[i].Load()
	}
}

// histogram is one worker's Histogram. Only that worker writes it, with a
// load and a store, no read-modify-write; Stats reads it with loads, so
// that a snapshot may count a duration in Count and not yet in its bucket.
type histogram struct {
	count   atomic.Uint64
	total   atomic.Int64
	buckets [HistogramBuckets]atomic.Uint64
}

// record counts a duration of d nanoseconds.
func (h *histogram) record(d int64) {
	b := &h.buckets[bucket(d)]
	b.Store(b.Load() + 1)
	h.total.Store(h.total.Load() + max(d, 0))
	h.count.Store(h.count.Load() + 1)
}

// timings are a worker's two histograms, in memory of the worker's own
// (a multiple of the cache line): no other worker writes near them.
type timings struct {
	wait, run histogram
	_         [cacheLine - (2*(2+HistogramBuckets)*8)%cacheLine]byte
}
