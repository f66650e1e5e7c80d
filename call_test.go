package iocp

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hold starts a Call on pl that runs until proceed is called, and returns
// once it runs: with concurrency 1 and one worker, it keeps every later
// job queued.
func hold(t *testing.T, pl *Pool) (proceed func(), done <-chan struct{}) {
	t.Helper()
	running, stop, end := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(end)
		Call(context.Background(), pl, func(context.Context) (int, error) {
			close(running)
			<-stop
			return 0, nil
		})
	}()
	recv(t, running)
	return func() { close(stop) }, end
}

func TestCall(t *testing.T) {
	t.Run("TypedResult", func(t *testing.T) {
		pl := newPool(t, newPort(t, 2), 2, nil)
		s, err := Call(context.Background(), pl, func(context.Context) (string, error) { return "answer", nil })
		require.NoError(t, err)
		assert.Equal(t, "answer", s)
		boom := errors.New("boom")
		n, err := Call(context.Background(), pl, func(context.Context) (int, error) { return 7, boom })
		assert.Same(t, boom, err)
		assert.Equal(t, 7, n, "the result comes back with the error, as fn returned it")
	})
	t.Run("ContextCarriesCallerAndWorker", func(t *testing.T) {
		p := newPort(t, 1)
		pl := newPool(t, p, 2, nil)
		type key struct{}
		caller := context.WithValue(context.Background(), key{}, "request")
		_, err := Call(caller, pl, func(ctx context.Context) (struct{}, error) {
			assert.Equal(t, "request", ctx.Value(key{}), "the caller's values")
			require.NotNil(t, FromContext(ctx), "the worker")
			Blocking(ctx, func() {
				assert.Equal(t, 1, p.Stats().Blocked, "Blocking finds the worker")
			})
			return struct{}{}, nil
		})
		require.NoError(t, err)
		assert.Zero(t, p.Stats().NoWorker)
	})
	t.Run("CancelledBeforeStartDoesNotRun", func(t *testing.T) {
		pl := newPool(t, newPort(t, 1), 1, nil, WithMaxWorkers(1))
		proceed, held := hold(t, pl)
		ctx, cancel := context.WithCancel(context.Background())
		var ran atomic.Bool
		errc := make(chan error, 1)
		go func() {
			_, err := Call(ctx, pl, func(context.Context) (int, error) { ran.Store(true); return 1, nil })
			errc <- err
		}()
		eventually(t, func() bool { return pl.Port().Stats().Queued == 1 }, "the call is queued")
		cancel()
		assert.ErrorIs(t, recv(t, errc), context.Canceled, "the caller returns at once, with ctx's error")
		proceed()
		recv(t, held)
		// The withdrawn packet is taken and skipped before this one runs.
		_, err := Call(context.Background(), pl, func(context.Context) (int, error) { return 0, nil })
		require.NoError(t, err)
		assert.False(t, ran.Load(), "fn never runs")
		eventually(t, func() bool { return pl.Stats().Cancelled == 1 }, "the withdrawn call is counted")
	})
	t.Run("ContextEndsWhileRunning", func(t *testing.T) {
		pl := newPool(t, newPort(t, 1), 1, nil)
		ctx, cancel := context.WithCancel(context.Background())
		started := make(chan struct{})
		errc := make(chan error, 1)
		go func() {
			_, err := Call(ctx, pl, func(ctx context.Context) (int, error) {
				close(started)
				<-ctx.Done()
				return 0, context.Cause(ctx)
			})
			errc <- err
		}()
		recv(t, started)
		cancel()
		assert.ErrorIs(t, recv(t, errc), context.Canceled, "fn saw ctx end; Call waited for its return")
	})
	t.Run("Panic", func(t *testing.T) {
		errs := make(chan error, 1)
		pl := newPool(t, newPort(t, 1), 1, nil, errorsTo(errs))
		_, err := Call(context.Background(), pl, func(context.Context) (int, error) { panic("oops") })
		var pe *PanicError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "oops", pe.Value)
		recv(t, errs)
		n, err := Call(context.Background(), pl, func(context.Context) (int, error) { return 2, nil })
		require.NoError(t, err, "the pool goes on")
		assert.Equal(t, 2, n)
	})
	t.Run("Closed", func(t *testing.T) {
		pl := newPool(t, newPort(t, 1), 1, nil)
		require.NoError(t, pl.Close())
		_, err := Call(context.Background(), pl, func(context.Context) (int, error) { return 0, nil })
		assert.ErrorIs(t, err, ErrClosed)
	})
	t.Run("DiscardedByClose", func(t *testing.T) {
		pl, err := newPort(t, 1).NewPool(1, nil, WithMaxWorkers(1))
		require.NoError(t, err)
		proceed, held := hold(t, pl)
		errc := make(chan error, 1)
		go func() {
			_, err := Call(context.Background(), pl, func(context.Context) (int, error) { return 0, nil })
			errc <- err
		}()
		eventually(t, func() bool { return pl.Port().Stats().Queued == 1 }, "the call is queued")
		closed := make(chan error, 1)
		go func() { closed <- pl.Close() }()
		eventually(t, func() bool { return refusing(pl.port.gate.Load()) }, "Close began")
		proceed()
		recv(t, held)
		assert.ErrorIs(t, recv(t, errc), ErrClosed)
		require.NoError(t, recv(t, closed))
	})
	t.Run("BoundedQueueWaitsForRoom", func(t *testing.T) {
		pl := newPool(t, newPort(t, 1, WithQueueLimit(1)), 1, nil, WithMaxWorkers(1))
		proceed, held := hold(t, pl)
		var wg sync.WaitGroup
		var sum atomic.Int64
		for i := range 5 {
			wg.Go(func() {
				n, err := Call(context.Background(), pl, func(context.Context) (int, error) { return i, nil })
				assert.NoError(t, err, "never ErrQueueFull")
				sum.Add(int64(n))
			})
		}
		eventually(t, func() bool { return pl.Port().Stats().Queued == 1 }, "the queue is full")
		proceed()
		recv(t, held)
		wg.Wait()
		assert.Equal(t, int64(0+1+2+3+4), sum.Load())
	})
	t.Run("Misuse", func(t *testing.T) {
		pl := newPool(t, newPort(t, 1), 1, nil)
		f := func(context.Context) (int, error) { return 0, nil }
		assert.PanicsWithValue(t, "iocp: nil Context", func() { Call(noContext, pl, f) })
		assert.PanicsWithValue(t, "iocp: Call with a nil function", func() {
			Call[int](context.Background(), pl, nil)
		})
	})
}

func TestGroup(t *testing.T) {
	t.Run("FirstErrorCancelsWithCause", func(t *testing.T) {
		pl := newPool(t, newPort(t, 2), 2, nil)
		g, ctx := pl.Group(context.Background())
		boom := errors.New("boom")
		g.Go(func(context.Context) error { return boom })
		g.Go(func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
		assert.Same(t, boom, g.Wait())
		assert.Same(t, boom, context.Cause(ctx), "the cause is the error, as errgroup's")
	})
	t.Run("WaitCancels", func(t *testing.T) {
		pl := newPool(t, newPort(t, 2), 2, nil)
		g, ctx := pl.Group(context.Background())
		g.Go(func(context.Context) error { return nil })
		require.NoError(t, g.Wait())
		assert.ErrorIs(t, ctx.Err(), context.Canceled)
	})
	t.Run("OwnErrors", func(t *testing.T) {
		// Two callers on one pool: each gets its own error, and a failure
		// in one cancels nothing in the other.
		pl := newPool(t, newPort(t, 2), 2, nil)
		a, actx := pl.Group(context.Background())
		b, bctx := pl.Group(context.Background())
		boom := errors.New("boom")
		a.Go(func(context.Context) error { return boom })
		b.Go(func(context.Context) error { return nil })
		assert.Same(t, boom, a.Wait())
		assert.Error(t, actx.Err())
		assert.NoError(t, bctx.Err(), "b is untouched until its Wait")
		assert.NoError(t, b.Wait())
	})
	t.Run("JoinErrors", func(t *testing.T) {
		pl := newPool(t, newPort(t, 1), 1, nil)
		g, _ := pl.Group(context.Background())
		g.JoinErrors()
		e1, e2 := errors.New("one"), errors.New("two")
		g.Go(func(context.Context) error { return e1 })
		g.Go(func(context.Context) error { return nil })
		g.Go(func(context.Context) error { return e2 })
		err := g.Wait()
		assert.ErrorIs(t, err, e1)
		assert.ErrorIs(t, err, e2)
	})
	t.Run("Limit", func(t *testing.T) {
		p := newPort(t, 4)
		pl := newPool(t, p, 8, nil)
		g, _ := pl.Group(context.Background())
		g.SetLimit(2)
		var now, most atomic.Int32
		for range 20 {
			g.Go(func(ctx context.Context) error {
				n := now.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				Blocking(ctx, func() { time.Sleep(time.Millisecond) }) // blocked ones count too
				now.Add(-1)
				return nil
			})
		}
		require.NoError(t, g.Wait())
		assert.LessOrEqual(t, most.Load(), int32(2))
	})
	t.Run("TryGo", func(t *testing.T) {
		pl := newPool(t, newPort(t, 1), 1, nil)
		g, _ := pl.Group(context.Background())
		g.SetLimit(1)
		stop := make(chan struct{})
		require.True(t, g.TryGo(func(context.Context) error { <-stop; return nil }))
		assert.False(t, g.TryGo(func(context.Context) error { return nil }), "at the limit")
		close(stop)
		require.NoError(t, g.Wait())
		assert.True(t, g.TryGo(func(context.Context) error { return nil }), "room again")
		require.NoError(t, g.Wait())
	})
	t.Run("TryGoFullQueue", func(t *testing.T) {
		pl := newPool(t, newPort(t, 1, WithQueueLimit(1)), 1, nil, WithMaxWorkers(1))
		proceed, held := hold(t, pl)
		g, _ := pl.Group(context.Background())
		require.True(t, g.TryGo(func(context.Context) error { return nil }))
		assert.False(t, g.TryGo(func(context.Context) error { return nil }), "the queue is full")
		proceed()
		recv(t, held)
		require.NoError(t, g.Wait())
	})
	t.Run("CallerCancelledTasksDoNotRun", func(t *testing.T) {
		pl := newPool(t, newPort(t, 1), 1, nil, WithMaxWorkers(1))
		proceed, held := hold(t, pl)
		ctx, cancel := context.WithCancel(context.Background())
		g, _ := pl.Group(ctx)
		var ran atomic.Int32
		for range 3 {
			g.Go(func(context.Context) error { ran.Add(1); return nil })
		}
		cancel()
		proceed()
		recv(t, held)
		assert.ErrorIs(t, g.Wait(), context.Canceled)
		assert.Zero(t, ran.Load())
		assert.Equal(t, uint64(3), pl.Stats().Cancelled)
	})
	t.Run("GoWaitsForLimitUnderContext", func(t *testing.T) {
		pl := newPool(t, newPort(t, 1), 1, nil)
		ctx, cancel := context.WithCancel(context.Background())
		g, _ := pl.Group(ctx)
		g.SetLimit(1)
		stop := make(chan struct{})
		g.Go(func(context.Context) error { <-stop; return nil })
		done := make(chan struct{})
		go func() {
			defer close(done)
			g.Go(func(context.Context) error { t.Error("ran"); return nil })
		}()
		cancel()
		recv(t, done)
		close(stop)
		assert.ErrorIs(t, g.Wait(), context.Canceled)
	})
	t.Run("Closed", func(t *testing.T) {
		pl := newPool(t, newPort(t, 1), 1, nil)
		require.NoError(t, pl.Close())
		g, _ := pl.Group(context.Background())
		g.Go(func(context.Context) error { return nil })
		assert.ErrorIs(t, g.Wait(), ErrClosed)
	})
	t.Run("Panic", func(t *testing.T) {
		pl := newPool(t, newPort(t, 1), 1, nil, WithErrorHandler(func(error) {}))
		g, _ := pl.Group(context.Background())
		g.Go(func(context.Context) error { panic("oops") })
		var pe *PanicError
		require.ErrorAs(t, g.Wait(), &pe)
	})
	t.Run("Misuse", func(t *testing.T) {
		pl := newPool(t, newPort(t, 1), 1, nil)
		g, _ := pl.Group(context.Background())
		assert.PanicsWithValue(t, "iocp: Group.SetLimit(0)", func() { g.SetLimit(0) })
		assert.PanicsWithValue(t, "iocp: Group.Go with a nil function", func() { g.Go(nil) })
		assert.PanicsWithValue(t, "iocp: nil Context", func() { pl.Group(noContext) })
	})
}

// TestGroupsStress runs many callers at once on one pool, each with a
// group of tasks that fail or are cancelled at random, and checks that
// every caller gets exactly its own tasks' results and errors, and that
// every task accepted runs exactly once or its caller gets its context's
// error.
func TestGroupsStress(t *testing.T) {
	callers, tasks := 1000, 10
	if testing.Short() {
		callers = 100
	}
	p := newPort(t, 2)
	pl := newPool(t, p, 4, nil)
	var ran sync.Map // "caller/task" -> *atomic.Int32
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(c), 1))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			g, gctx := pl.Group(ctx)
			if r.IntN(2) == 0 {
				g.SetLimit(1 + r.IntN(3))
			}
			results := make([]int, tasks)
			fails := map[int]error{}
			cancelAt := -1
			if r.IntN(4) == 0 {
				cancelAt = r.IntN(tasks)
			}
			for i := range tasks {
				if i == cancelAt {
					cancel()
				}
				var want error
				if r.IntN(5) == 0 {
					want = fmt.Errorf("caller %d task %d", c, i)
					fails[i] = want
				}
				count := new(atomic.Int32)
				ran.Store(fmt.Sprint(c, "/", i), count)
				g.Go(func(ctx context.Context) error {
					count.Add(1)
					assert.NotNil(t, FromContext(ctx))
					Blocking(ctx, func() {})
					results[i] = c*tasks + i
					return want
				})
			}
			err := g.Wait()
			assert.Error(t, gctx.Err())
			for i := range tasks {
				n := int32(0)
				if v, ok := ran.Load(fmt.Sprint(c, "/", i)); ok {
					n = v.(*atomic.Int32).Load()
				}
				assert.LessOrEqual(t, n, int32(1), "task %d/%d ran twice", c, i)
				if n == 1 {
					assert.Equal(t, c*tasks+i, results[i], "each caller gets its own results")
				} else {
					assert.NotEqual(t, -1, cancelAt, "task %d/%d did not run, and its caller's context did not end", c, i)
				}
			}
			switch {
			case err == nil:
				assert.Empty(t, fails)
				assert.Equal(t, -1, cancelAt)
			case errors.Is(err, context.Canceled):
				assert.NotEqual(t, -1, cancelAt)
			default:
				found := false
				for _, f := range fails {
					found = found || err == f
				}
				assert.True(t, found, "caller %d got an error not its own: %v", c, err)
			}
		})
	}
	wg.Wait()
	eventually(t, func() bool { return p.Stats().Queued == 0 }, "the withdrawn packets are taken")
}
