package iocp

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The elastic pool: workers start while every worker is blocked and
// packets wait, up to WithMaxWorkers, and those beyond n retire after WithIdleTimeout without a packet.
// Most tests run in a synctest bubble, where synctest.Wait returns once
// every goroutine of the pool is parked: what has started by then is all
// that will, and no assertion waits on the clock. A bubble cannot tell a
// kernel wait from work, so those run on the pure-Go port (pureGoPort);
// OnEitherBackend runs on the native one too, on the real clock.

// pureGoPort returns a pure-Go port of concurrency 1 whichever backend the
// tests run on: for a synctest bubble, or a test that compares the two.
func pureGoPort(t *testing.T) *Port {
	t.Helper()
	p, err := NewPort(1)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

// blockers returns a handler that marks a wait on proceed with Blocking,
// counting the handlers inside it, and the most seen running (outside the
// wait) at once.
func blockers(proceed <-chan struct{}, inside, most *atomic.Int32, running *atomic.Int32) Handler {
	return func(ctx context.Context, _ Packet) {
		raise(most, running.Add(1))
		running.Add(-1)
		Blocking(ctx, func() {
			inside.Add(1)
			<-proceed
			inside.Add(-1)
		})
	}
}

func TestPoolElastic(t *testing.T) {
	t.Run("OnEitherBackend", func(t *testing.T) {
		p := newPort(t, 1)
		proceed := make(chan struct{})
		var inside, most, running atomic.Int32
		pl := newPool(t, p, 1, blockers(proceed, &inside, &most, &running), WithMaxWorkers(4))
		for range 3 {
			require.NoError(t, p.Post(Packet{}))
		}
		eventually(t, func() bool { return inside.Load() == 3 }, "3 handlers in their wait")
		assert.Equal(t, 3, pl.Workers())
		assert.Equal(t, uint64(2), pl.Stats().Grown)
		close(proceed)
		eventually(t, func() bool { return pl.Stats().Handled == 3 }, "all handled")
		if concurrencyEnforced() {
			assert.Equal(t, int32(1), most.Load(), "the concurrency value holds")
		}
	})

	t.Run("GrowsWhileAllBlocked", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := pureGoPort(t)
			proceed := make(chan struct{})
			var inside, most, running atomic.Int32
			pl := newPool(t, p, 1, blockers(proceed, &inside, &most, &running), WithMaxWorkers(4))
			for range 3 {
				require.NoError(t, p.Post(Packet{}))
			}
			synctest.Wait()
			assert.Equal(t, int32(3), inside.Load(), "every packet's handler in its wait")
			assert.Equal(t, 3, pl.Workers())
			assert.Equal(t, uint64(2), pl.Stats().Grown)
			assert.Equal(t, 0, p.Stats().Queued)
			close(proceed)
			synctest.Wait()
			assert.Equal(t, int32(1), most.Load(), "the concurrency value holds")
		})
	})

	t.Run("UpToTheMaximum", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := pureGoPort(t)
			proceed := make(chan struct{})
			var inside, most, running atomic.Int32
			pl := newPool(t, p, 1, blockers(proceed, &inside, &most, &running), WithMaxWorkers(3))
			for range 10 {
				require.NoError(t, p.Post(Packet{}))
			}
			synctest.Wait()
			assert.Equal(t, int32(3), inside.Load())
			assert.Equal(t, 3, pl.Workers())
			assert.Equal(t, 7, p.Stats().Queued)
			close(proceed)
			synctest.Wait()
			assert.Equal(t, 0, p.Stats().Queued, "all handled")
			assert.Equal(t, uint64(10), pl.Stats().Handled)
			assert.Equal(t, int32(1), most.Load())
		})
	})

	t.Run("NotWhileWorkersRun", func(t *testing.T) {
		// A handler that waits without Blocking holds its slot: the port
		// is not starved, and no worker starts.
		synctest.Test(t, func(t *testing.T) {
			p := pureGoPort(t)
			proceed := make(chan struct{})
			pl := newPool(t, p, 1, func(context.Context, Packet) { <-proceed }, WithMaxWorkers(4))
			for range 3 {
				require.NoError(t, p.Post(Packet{}))
			}
			synctest.Wait()
			assert.Equal(t, 1, pl.Workers())
			assert.Equal(t, uint64(0), pl.Stats().Grown)
			assert.Equal(t, 2, p.Stats().Queued)
			close(proceed)
			synctest.Wait()
		})
	})

	t.Run("FixedPool", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := pureGoPort(t)
			proceed := make(chan struct{})
			var inside, most, running atomic.Int32
			pl := newPool(t, p, 2, blockers(proceed, &inside, &most, &running), WithMaxWorkers(2))
			for range 4 {
				require.NoError(t, p.Post(Packet{}))
			}
			synctest.Wait()
			assert.Equal(t, int32(2), inside.Load())
			assert.Equal(t, 2, pl.Workers())
			close(proceed)
			synctest.Wait()
		})
	})

	t.Run("RetiresWorkersWithoutPackets", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := pureGoPort(t)
			proceed := make(chan struct{})
			var inside, most, running atomic.Int32
			pl := newPool(t, p, 1, blockers(proceed, &inside, &most, &running),
				WithMaxWorkers(4), WithIdleTimeout(time.Minute))
			for range 4 {
				require.NoError(t, p.Post(Packet{}))
			}
			synctest.Wait()
			require.Equal(t, 4, pl.Workers())
			close(proceed)
			synctest.Wait()
			time.Sleep(time.Minute - time.Second)
			synctest.Wait()
			assert.Equal(t, 4, pl.Workers(), "not before the retire timeout")
			time.Sleep(2 * time.Second)
			synctest.Wait()
			assert.Equal(t, 1, pl.Workers(), "back to n")
			s := pl.Stats()
			assert.Equal(t, uint64(3), s.Grown)
			assert.Equal(t, uint64(3), s.Retired)
			assert.Equal(t, 0, p.Stats().Running, "the retired workers freed their slots")
			time.Sleep(time.Hour)
			synctest.Wait()
			assert.Equal(t, 1, pl.Workers(), "n stay")
		})
	})

	t.Run("RetiredIndexesAreReused", func(t *testing.T) {
		// Growing again after a retirement reuses the workers' indexes: the
		// counters, and the "iocp.worker" labels, stay within the maximum.
		synctest.Test(t, func(t *testing.T) {
			p := pureGoPort(t)
			var inside, most, running atomic.Int32
			var gate atomic.Pointer[chan struct{}]
			pl := newPool(t, p, 1, func(ctx context.Context, pkt Packet) {
				blockers(*gate.Load(), &inside, &most, &running)(ctx, pkt)
			}, WithMaxWorkers(3), WithIdleTimeout(time.Second))
			for round := range 3 {
				ch := make(chan struct{})
				gate.Store(&ch)
				for range 3 {
					require.NoError(t, p.Post(Packet{}))
				}
				synctest.Wait()
				require.Equal(t, int32(3), inside.Load(), "round %d", round)
				close(ch)
				time.Sleep(2 * time.Second)
				synctest.Wait()
				require.Equal(t, 1, pl.Workers(), "round %d", round)
			}
			assert.Len(t, *pl.counters.Load(), 3)
			assert.Equal(t, uint64(9), pl.Stats().Handled)
		})
	})

	t.Run("StopsWithThePool", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := pureGoPort(t)
			proceed := make(chan struct{})
			var inside, most, running atomic.Int32
			pl, err := p.NewPool(1, blockers(proceed, &inside, &most, &running), WithMaxWorkers(8))
			require.NoError(t, err)
			for range 20 {
				require.NoError(t, p.Post(Packet{}))
			}
			synctest.Wait()
			require.Equal(t, int32(8), inside.Load())
			done := make(chan error)
			go func() { done <- pl.Shutdown(context.Background()) }()
			synctest.Wait()
			close(proceed)
			assert.NoError(t, <-done)
			assert.Equal(t, uint64(20), pl.Stats().Handled, "Shutdown drained the queue")
		})
	})
}

func TestPoolElasticOptions(t *testing.T) {
	p := newPort(t, 2)
	for _, opt := range []PoolOption{WithMaxWorkers(0), WithMaxWorkers(-1), WithMaxWorkers(maxWorkers + 1), WithIdleTimeout(0), WithIdleTimeout(-time.Second)} {
		_, err := p.NewPool(1, nil, opt)
		assert.ErrorIs(t, err, ErrInvalid)
	}
	_, err := p.NewPool(4, nil, WithMaxWorkers(3))
	assert.ErrorIs(t, err, ErrInvalid, "a maximum below n")
	assert.ErrorContains(t, err, "WithMaxWorkers(3)")
	pl := newPool(t, p, 0, nil)
	assert.Equal(t, defaultMaxWorkers, pl.max)
	assert.Equal(t, defaultRetireAfter, pl.retireAfter)
	pl.Close()
	p = newPort(t, 2)
	pl = newPool(t, p, 300, nil)
	assert.Equal(t, 300, pl.max, "a larger n is the maximum")
}
