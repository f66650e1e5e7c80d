package iocp

import (
	"context"
	"math"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHistogram(t *testing.T) {
	t.Run("Buckets", func(t *testing.T) {
		var h Histogram
		assert.Equal(t, 128*time.Nanosecond, h.Bound(0))
		assert.Equal(t, 256*time.Nanosecond, h.Bound(1))
		assert.Equal(t, time.Duration(math.MaxInt64), h.Bound(HistogramBuckets-1))
		for _, c := range []struct {
			d      int64
			bucket int
		}{
			{-5, 0}, {0, 0}, {127, 0}, {128, 1}, {255, 1}, {256, 2},
			{int64(time.Millisecond), 13}, // 2^19.9 ns: from 2^19 to 2^20
			{math.MaxInt64, HistogramBuckets - 1},
		} {
			b := bucket(c.d)
			assert.Equal(t, c.bucket, b, "%d ns", c.d)
			if b < HistogramBuckets-1 {
				assert.Less(t, c.d, int64(h.Bound(b)), "below its bucket's bound")
			}
			if b > 0 {
				assert.GreaterOrEqual(t, c.d, int64(h.Bound(b-1)), "at least the bound below")
			}
		}
	})

	t.Run("Quantile", func(t *testing.T) {
		var h histogram
		for range 90 {
			h.record(100) // bucket 0
		}
		for range 10 {
			h.record(int64(time.Millisecond)) // bucket 13
		}
		var s Histogram
		s.add(&h)
		assert.Equal(t, uint64(100), s.Count)
		assert.Equal(t, 90*100*time.Nanosecond+10*time.Millisecond, s.Total)
		assert.Equal(t, s.Bound(0), s.Quantile(0.5))
		assert.Equal(t, s.Bound(0), s.Quantile(0.9))
		assert.Equal(t, s.Bound(13), s.Quantile(0.91))
		assert.Equal(t, s.Bound(13), s.Quantile(1))
		assert.Equal(t, s.Bound(0), s.Quantile(0))
		assert.Equal(t, s.Total/100, s.Mean())
		var empty Histogram
		assert.Zero(t, empty.Quantile(0.5))
		assert.Zero(t, empty.Mean())
	})
}

func TestPoolTimings(t *testing.T) {
	// In a bubble the clock moves only when every goroutine waits, so the
	// durations are exact: each packet waits in the queue while the one
	// before it is handled, and each handler sleeps 10 ms.
	synctest.Test(t, func(t *testing.T) {
		p := pureGoPort(t)
		const n = 5
		pl, err := p.NewPool(1, func(ctx context.Context, _ Packet) {
			time.Sleep(10 * time.Millisecond) // not marked: no other worker starts
		}, WithTimings())
		require.NoError(t, err)
		defer pl.Close()
		synctest.Wait() // the worker waits
		for range n {
			require.NoError(t, p.Post(Packet{}))
		}
		synctest.Wait()
		s := pl.Stats()
		assert.Equal(t, 1, s.InFlight, "the first handler sleeps")
		time.Sleep(n*10*time.Millisecond + time.Millisecond)
		synctest.Wait()
		s = pl.Stats()
		assert.Equal(t, 0, s.InFlight)
		assert.Equal(t, uint64(n), s.Handled)
		assert.Equal(t, uint64(n), s.Handling.Count)
		assert.Equal(t, n*10*time.Millisecond, s.Handling.Total)
		assert.Equal(t, uint64(n), s.Handling.Buckets[bucket(int64(10*time.Millisecond))])
		// Queue waits of 0, 10, 20, 30 and 40 ms.
		assert.Equal(t, uint64(n), s.QueueWait.Count)
		assert.Equal(t, 100*time.Millisecond, s.QueueWait.Total)
		assert.Equal(t, uint64(1), s.QueueWait.Buckets[0], "handed over at once")
		assert.Equal(t, s.QueueWait.Bound(bucket(int64(40*time.Millisecond))), s.QueueWait.Quantile(1))
	})
}

func TestPoolInFlight(t *testing.T) {
	p := newPort(t, 2)
	proceed := make(chan struct{})
	in := make(chan struct{})
	pl := newPool(t, p, 2, func(context.Context, Packet) {
		in <- struct{}{}
		<-proceed
	})
	post(t, p, 1)
	post(t, p, 2)
	recv(t, in)
	recv(t, in)
	s := pl.Stats()
	assert.Equal(t, 2, s.InFlight)
	assert.Zero(t, s.Handling.Count, "no timings without WithTimings")
	assert.Zero(t, s.QueueWait.Count)
	close(proceed)
	eventually(t, func() bool { return pl.Stats().InFlight == 0 }, "none in flight")
}

func TestPoolTimingsAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates; run without -race")
	}
	p := newPort(t, 1)
	done := make(chan struct{})
	pl := newPool(t, p, 1, func(context.Context, Packet) { done <- struct{}{} },
		WithTimings(), WithMaxWorkers(1))
	assert.Zero(t, testing.AllocsPerRun(1000, func() {
		p.Post(Packet{Key: 1})
		<-done
	}), "a packet through a timed pool")
	// AllocsPerRun runs fn once more to warm up; the last handler
	// records its time after its send, so look until it has.
	eventually(t, func() bool { return pl.Stats().Handling.Count == 1001 }, "every handler timed")
}
