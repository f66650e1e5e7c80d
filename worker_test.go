package iocp

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWorkerCloseFromAnotherGoroutine: Close is safe from any goroutine.
// A Get, GetBatch or TryGet in progress returns ErrClosed, the worker's
// slot is freed, and every count stays exact.
func TestWorkerCloseFromAnotherGoroutine(t *testing.T) {
	t.Run("WaitingGet", func(t *testing.T) {
		p := newPort(t, 1)
		in := park(t, p, p.NewWorker())
		require.NoError(t, in.w.Close())
		assert.ErrorIs(t, in.result(t).err, ErrClosed)
		st := p.Stats()
		assert.Equal(t, 0, st.Waiting)
		assert.Equal(t, 0, st.Running)
		_, err := in.w.Get(context.Background())
		assert.ErrorIs(t, err, ErrClosed, "a closed worker's Get")
		assert.ErrorIs(t, in.w.Close(), ErrClosed, "a second Close")

		// The port is unharmed: a Post goes to the next worker.
		post(t, p, "after")
		pkt, ok := p.NewWorker().TryGet()
		require.True(t, ok)
		assert.Equal(t, "after", pkt.Key)
	})

	t.Run("WaitingGetBatch", func(t *testing.T) {
		p := newPort(t, 1)
		w := p.NewWorker()
		out := make(chan error, 1)
		go func() {
			_, err := w.GetBatch(context.Background(), make([]Packet, 4))
			out <- err
		}()
		eventually(t, func() bool { return p.Stats().Waiting == 1 }, "GetBatch parks")
		require.NoError(t, w.Close())
		assert.ErrorIs(t, recv(t, out), ErrClosed)
		assert.Equal(t, 0, p.Stats().Waiting)
	})

	t.Run("WaitingWithCountedSlot", func(t *testing.T) {
		// A worker that held its slot and waits gave it up first; Close
		// frees nothing twice.
		kernelScheduled(t)
		p := newPort(t, 1)
		w := runningWorker(t, p)
		in := park(t, p, w)
		require.NoError(t, w.Close())
		assert.ErrorIs(t, in.result(t).err, ErrClosed)
		assert.Equal(t, Stats{Concurrency: 1}, ownStats(p))
	})

	t.Run("RunningFreesItsSlot", func(t *testing.T) {
		// C = 1: a running worker holds the slot, another waits, a packet
		// is queued. Closing the running one from here releases the
		// waiter with the packet (S33).
		kernelScheduled(t)
		p := newPort(t, 1)
		w := runningWorker(t, p)
		in := park(t, p, p.NewWorker())
		post(t, p, "queued")
		assert.Equal(t, 1, p.Stats().Queued)
		done := make(chan error)
		go func() { done <- w.Close() }()
		require.NoError(t, recv(t, done))
		assert.Equal(t, "queued", in.result(t).pkt.Key)
		assert.Equal(t, 1, p.Stats().Running)
	})

	t.Run("Idle", func(t *testing.T) {
		p := newPort(t, 1)
		w := p.NewWorker()
		_, ok := w.TryGet()
		require.False(t, ok)
		assert.Equal(t, 1, p.Stats().Idle)
		require.NoError(t, w.Close())
		st := p.Stats()
		assert.Equal(t, 0, st.Idle)
		assert.Equal(t, 0, st.Running)
	})

	t.Run("Blocked", func(t *testing.T) {
		// The owner is inside Blocking when another goroutine closes the
		// worker: its Unblock finds the worker closed and does nothing.
		p := newPort(t, 1)
		w := p.NewWorker()
		post(t, p, "run")
		inside, closed := make(chan struct{}), make(chan struct{})
		done := make(chan struct{})
		go func() { // one goroutine for w, as a native port requires
			defer close(done)
			_, ok := w.TryGet()
			assert.True(t, ok)
			w.Blocking(func() {
				close(inside)
				<-closed
			})
			_, err := w.Get(context.Background())
			assert.ErrorIs(t, err, ErrClosed)
		}()
		<-inside
		require.NoError(t, w.Close())
		close(closed)
		<-done
		assert.Equal(t, Stats{Concurrency: 1}, ownStats(p))
	})
}

// TestWorkerCloseRace closes workers from another goroutine while they
// take packets that producers post: every packet is delivered exactly
// once, to a worker or to the final drain, and the counts come back to
// zero.
func TestWorkerCloseRace(t *testing.T) {
	rounds, perRound := 50, 2_000
	if testing.Short() {
		rounds, perRound = 10, 500
	}
	for round := range rounds {
		p := newPort(t, 2)
		r := rand.New(rand.NewPCG(uint64(round), 2))
		var got atomic.Int64
		var wg sync.WaitGroup
		workers := make([]*Worker, 6)
		for i := range workers {
			w := p.NewWorker()
			workers[i] = w
			wg.Go(func() {
				dst := make([]Packet, 1+i%3)
				ctx := context.Background()
				for j := 0; ; j++ {
					var n int
					var err error
					switch j % 3 {
					case 0:
						_, err = w.Get(ctx)
						n = btoi(err == nil)
					case 1:
						n, err = w.GetBatch(ctx, dst)
					default:
						_, ok := w.TryGet() // false once closed; the next Get says so
						n = btoi(ok)
					}
					got.Add(int64(n))
					if err != nil {
						assert.ErrorIs(t, err, ErrClosed)
						return
					}
				}
			})
		}
		for i := range perRound {
			require.NoError(t, p.Post(Packet{Key: i}))
			if r.IntN(perRound/len(workers)) == 0 {
				workers[r.IntN(len(workers))].Close()
			}
		}
		for _, w := range workers {
			w.Close()
		}
		wg.Wait()
		st := p.Stats()
		assert.Equal(t, 0, st.Running, "round %d", round)
		assert.Equal(t, 0, st.Waiting)
		assert.Equal(t, 0, st.Idle)
		// What the workers did not take is still queued.
		rest := p.NewWorker()
		for {
			if _, ok := rest.TryGet(); !ok {
				break
			}
			got.Add(1)
		}
		rest.Close()
		require.Equal(t, int64(perRound), got.Load(), "round %d: every packet exactly once", round)
	}
}

// TestClosedWorkerError: a closed worker of an open port says so; its
// error still matches ErrClosed (S33).
func TestClosedWorkerError(t *testing.T) {
	p := newPort(t, 1)
	w := p.NewWorker()
	require.NoError(t, w.Close())
	_, err := w.Get(context.Background())
	require.ErrorIs(t, err, ErrClosed)
	assert.Equal(t, "iocp: worker closed", err.Error())
	assert.Equal(t, "iocp: worker closed", w.Close().Error())
	require.NoError(t, p.Close())
	_, err = w.Get(context.Background())
	assert.Same(t, ErrClosed, err, "the port is closed too")
}
