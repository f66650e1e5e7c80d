package iocp

// A pool's timings (WithTimings): two histograms a worker, written by that
// worker alone and summed by Stats.

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

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
// time.Duration.
func Bound(i int) time.Duration {
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
			return Bound(i)
		}
	}
	return Bound(HistogramBuckets - 1)
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
