package iocp

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPostWait(t *testing.T) {
	t.Run("WaitsForRoom", func(t *testing.T) {
		p := newPort(t, 1, WithQueueLimit(2))
		post(t, p, 1, 2)
		out := make(chan error, 1)
		go func() { out <- p.PostWait(context.Background(), Packet{Key: 3}) }()
		eventually(t, func() bool { return p.posters.Load() == 1 }, "PostWait waits")
		assert.Empty(t, out)
		w := p.NewWorker()
		defer w.Close()
		pkt, ok := w.TryGet()
		require.True(t, ok)
		assert.Equal(t, 1, pkt.Key)
		require.NoError(t, recv(t, out), "a Get made room")
		for _, want := range []int{2, 3} {
			pkt, ok := w.TryGet()
			require.True(t, ok)
			assert.Equal(t, want, pkt.Key, "FIFO")
		}
	})

	t.Run("Context", func(t *testing.T) {
		p := newPort(t, 1, WithQueueLimit(1))
		post(t, p, 1)
		ctx, cancel := context.WithCancel(context.Background())
		out := make(chan error, 1)
		go func() { out <- p.PostWait(ctx, Packet{Key: 2}) }()
		eventually(t, func() bool { return p.posters.Load() == 1 }, "PostWait waits")
		cancel()
		assert.ErrorIs(t, recv(t, out), context.Canceled)
		assert.Equal(t, 1, p.Stats().Queued, "nothing queued")
		assert.Zero(t, p.posters.Load())
	})

	t.Run("Close", func(t *testing.T) {
		p := newPort(t, 1, WithQueueLimit(1))
		post(t, p, 1)
		out := make(chan error, 1)
		go func() { out <- p.PostWait(context.Background(), Packet{Key: 2}) }()
		eventually(t, func() bool { return p.posters.Load() == 1 }, "PostWait waits")
		require.NoError(t, p.Close())
		assert.ErrorIs(t, recv(t, out), ErrClosed)
		assert.Equal(t, uint64(1), p.Stats().Discarded, "only the packet queued before")
	})

	t.Run("Unbounded", func(t *testing.T) {
		p := newPort(t, 1)
		require.NoError(t, p.PostWait(context.Background(), Packet{Key: 1}))
		assert.Equal(t, 1, p.Stats().Queued)
	})

	// Several posters wait on a small queue while workers drain it: every
	// packet arrives exactly once, each poster's in order.
	t.Run("ExactlyOnce", func(t *testing.T) {
		const posters = 4
		each := 5_000
		if testing.Short() {
			each = 500
		}
		p := newPort(t, 2, WithQueueLimit(4))
		var pw sync.WaitGroup
		for i := range posters {
			pw.Go(func() {
				for j := range each {
					assert.NoError(t, p.PostWait(context.Background(), Packet{Key: i, Bytes: j}))
				}
			})
		}
		got := make(chan Packet, posters*each)
		var ww sync.WaitGroup
		for range 3 {
			ww.Go(func() {
				w := p.NewWorker()
				defer w.Close()
				for {
					pkt, err := w.Get(context.Background())
					if err != nil {
						return
					}
					got <- pkt
				}
			})
		}
		pw.Wait()
		require.NoError(t, p.Shutdown(context.Background()))
		ww.Wait()
		close(got)
		seen := map[[2]int]bool{}
		for pkt := range got {
			k := [2]int{pkt.Key.(int), pkt.Bytes}
			require.False(t, seen[k], "packet %v twice", k)
			seen[k] = true
		}
		assert.Len(t, seen, posters*each)
	})
}

func TestPostBatch(t *testing.T) {
	batch := func(keys ...int) []Packet {
		pkts := make([]Packet, len(keys))
		for i, k := range keys {
			pkts[i] = Packet{Key: k}
		}
		return pkts
	}
	t.Run("InOrder", func(t *testing.T) {
		p := newPort(t, 1)
		pkts := make([]Packet, 1000) // more than one segment
		for i := range pkts {
			pkts[i].Key = i
		}
		n, err := p.PostBatch(pkts)
		require.NoError(t, err)
		require.Equal(t, len(pkts), n)
		w := p.NewWorker()
		defer w.Close()
		for i := range pkts {
			pkt, ok := w.TryGet()
			require.True(t, ok)
			require.Equal(t, i, pkt.Key)
		}
		n, err = p.PostBatch(nil)
		assert.Zero(t, n)
		assert.NoError(t, err)
	})

	t.Run("Bounded", func(t *testing.T) {
		p := newPort(t, 1, WithQueueLimit(8))
		post(t, p, 0, 1, 2, 3, 4)
		n, err := p.PostBatch(batch(5, 6, 7, 8, 9))
		assert.ErrorIs(t, err, ErrQueueFull)
		assert.Equal(t, 3, n, "as many as fit")
		assert.Equal(t, 8, p.Stats().Queued)
	})

	t.Run("Closed", func(t *testing.T) {
		p := newPort(t, 1)
		require.NoError(t, p.Close())
		n, err := p.PostBatch(batch(1, 2))
		assert.ErrorIs(t, err, ErrClosed)
		assert.Zero(t, n)
	})

	t.Run("ReleasesWaiters", func(t *testing.T) {
		kernelScheduled(t)
		p := newPort(t, 2)
		ws := parkN(t, p, 2)
		n, err := p.PostBatch(batch(1, 2))
		require.NoError(t, err)
		require.Equal(t, 2, n)
		got := []any{ws[0].result(t).pkt.Key, ws[1].result(t).pkt.Key}
		assert.Equal(t, []any{2, 1}, got, "LIFO: the most recent waiter takes the oldest packet")
	})
}
