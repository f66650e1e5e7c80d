package iocp

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPoolGo(t *testing.T) {
	t.Run("WaitReturnsTheFirstError", func(t *testing.T) {
		p := newPort(t, 2)
		pl := newPool(t, p, 0, nil)
		var ran atomic.Int64
		boom := errors.New("boom")
		for i := range 100 {
			require.NoError(t, pl.Go(func(ctx context.Context) error {
				ran.Add(1)
				assert.NotNil(t, FromContext(ctx), "the task's context carries its worker")
				if i == 50 {
					return boom
				}
				return nil
			}))
		}
		assert.ErrorIs(t, pl.Wait(), boom)
		assert.Equal(t, int64(100), ran.Load())
		assert.Error(t, pl.Go(nil))
	})

	t.Run("Bounded", func(t *testing.T) {
		// Tasks run under the port's concurrency value.
		p := newPort(t, 2)
		pl := newPool(t, p, 8, nil)
		var in, most atomic.Int64
		for range 200 {
			pl.Go(func(ctx context.Context) error {
				n := in.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				in.Add(-1)
				return nil
			})
		}
		require.NoError(t, pl.Wait())
		if concurrencyEnforced() {
			assert.LessOrEqual(t, most.Load(), int64(2))
		}
	})

	t.Run("CancelOnError", func(t *testing.T) {
		p := newPort(t, 2)
		pl := newPool(t, p, 2, nil, WithCancelOnError())
		started := make(chan struct{})
		require.NoError(t, pl.Go(func(ctx context.Context) error {
			close(started)
			<-ctx.Done() // ended by the other task's error
			return ctx.Err()
		}))
		<-started
		fail := errors.New("fail")
		require.NoError(t, pl.Go(func(context.Context) error { return fail }))
		assert.ErrorIs(t, pl.Wait(), fail, "the first error, not the cancellation it caused")
	})

	t.Run("Panic", func(t *testing.T) {
		p := newPort(t, 1)
		errs := make(chan error, 1)
		pl := newPool(t, p, 1, nil, errorsTo(errs))
		require.NoError(t, pl.Go(func(context.Context) error { panic("task panic") }))
		err := pl.Wait()
		var pe *PanicError
		require.True(t, errors.As(err, &pe), "got %v", err)
		assert.Equal(t, "task panic", pe.Value)
		assert.Same(t, pe, recv(t, errs), "reported as well")
	})

	t.Run("CloseDiscards", func(t *testing.T) {
		kernelScheduled(t) // one slot held: the second task stays queued
		p := newPort(t, 1)
		pl, err := p.NewPool(2, nil)
		require.NoError(t, err)
		entered := make(chan struct{})
		require.NoError(t, pl.Go(func(ctx context.Context) error {
			close(entered)
			<-ctx.Done()
			return nil
		}))
		<-entered
		require.NoError(t, pl.Go(func(context.Context) error { return nil }))
		require.NoError(t, pl.Close())
		assert.ErrorIs(t, pl.Wait(), ErrClosed, "the queued task never ran")
		assert.ErrorIs(t, pl.Go(func(context.Context) error { return nil }), ErrClosed)
	})

	t.Run("PortCloseDiscards", func(t *testing.T) {
		// Closing the port directly discards queued tasks too: Wait still
		// returns.
		kernelScheduled(t)
		p := newPort(t, 1)
		pl := newPool(t, p, 1, nil)
		proceed := make(chan struct{})
		require.NoError(t, pl.Go(func(context.Context) error { <-proceed; return nil }))
		eventually(t, func() bool { return p.Stats().Running == 1 }, "the first task runs")
		require.NoError(t, pl.Go(func(context.Context) error { return nil }))
		require.NoError(t, p.Close())
		close(proceed)
		assert.ErrorIs(t, pl.Wait(), ErrClosed)
	})

	t.Run("WithContext", func(t *testing.T) {
		p := newPort(t, 1)
		parent, cancel := context.WithCancel(context.Background())
		pl := newPool(t, p, 1, nil, WithContext(parent))
		cancel()
		require.NoError(t, pl.Go(func(ctx context.Context) error { return ctx.Err() }))
		assert.ErrorIs(t, pl.Wait(), context.Canceled, "the parent's end reaches the tasks")
	})

	t.Run("NilHandlerReportsPostedPackets", func(t *testing.T) {
		p := newPort(t, 1)
		errs := make(chan error, 1)
		newPool(t, p, 1, nil, errorsTo(errs))
		post(t, p, "stray")
		assert.Contains(t, recv(t, errs).Error(), "no handler (key stray)")
	})
}

func TestPoolStats(t *testing.T) {
	p := newPort(t, 2)
	errs := make(chan error, 4)
	pl := newPool(t, p, 3, func(_ context.Context, pkt Packet) {
		if pkt.Key == "panic" {
			panic("counted")
		}
	}, errorsTo(errs))
	post(t, p, "a", "b", "panic")
	recv(t, errs)
	require.NoError(t, pl.Go(func(context.Context) error { return nil }))
	require.NoError(t, pl.Go(func(context.Context) error { return errors.New("counted") }))
	assert.Error(t, pl.Wait())
	eventually(t, func() bool { return pl.Stats().Handled == 5 }, "five handled")
	assert.Equal(t, PoolStats{Workers: 3, Handled: 5, Panicked: 1, Failed: 1}, pl.Stats())
}

// TestPoolStallReport: a handler that runs past the limit is reported
// once, with its worker, and counted in Stats while it runs.
func TestPoolStallReport(t *testing.T) {
	p := newPort(t, 1)
	stalls := make(chan Stall, 4)
	proceed := make(chan struct{})
	pl := newPool(t, p, 1, func(_ context.Context, pkt Packet) {
		if pkt.Key == "stuck" {
			<-proceed
		}
	}, WithStallReport(5*time.Millisecond, func(s Stall) { stalls <- s }))
	post(t, p, "stuck")
	s := recv(t, stalls)
	assert.Equal(t, 0, s.Worker)
	assert.Greater(t, s.Running, 5*time.Millisecond)
	assert.Equal(t, 1, pl.Stats().Stalled)
	close(proceed)
	eventually(t, func() bool { return pl.Stats().Handled == 1 }, "handled")
	assert.Zero(t, pl.Stats().Stalled)
	assert.Empty(t, stalls, "reported once")

	_, err := p.NewPool(1, nil, WithStallReport(0, func(Stall) {}))
	assert.ErrorIs(t, err, ErrInvalid)
	_, err = p.NewPool(1, nil, WithStallReport(time.Second, nil))
	assert.ErrorIs(t, err, ErrInvalid)
}

// TestPoolGoBatches: Wait ends a batch. What it returned is not returned
// again, and with WithCancelOnError the next batch starts with a context
// that is not cancelled; the cause of the cancelled one is the error.
func TestPoolGoBatches(t *testing.T) {
	t.Run("WaitResets", func(t *testing.T) {
		pl := newPool(t, newPort(t, 2), 2, nil)
		boom := errors.New("boom")
		require.NoError(t, pl.Go(func(context.Context) error { return boom }))
		assert.Same(t, boom, pl.Wait())
		require.NoError(t, pl.Go(func(context.Context) error { return nil }))
		assert.NoError(t, pl.Wait(), "the next batch starts clean")
	})
	t.Run("CancelOnErrorCause", func(t *testing.T) {
		pl := newPool(t, newPort(t, 1), 1, nil, WithCancelOnError())
		boom := errors.New("boom")
		require.NoError(t, pl.Go(func(context.Context) error { return boom }))
		causes := make(chan error, 1)
		require.NoError(t, pl.Go(func(ctx context.Context) error {
			<-ctx.Done()
			causes <- context.Cause(ctx)
			return nil
		}))
		assert.Same(t, boom, pl.Wait())
		assert.Same(t, boom, recv(t, causes), "the cause is the task's error, as errgroup.WithContext's")
		require.NoError(t, pl.Go(func(ctx context.Context) error {
			require.NotNil(t, FromContext(ctx))
			return ctx.Err()
		}))
		assert.NoError(t, pl.Wait(), "the next batch's context is not cancelled")
	})
}
