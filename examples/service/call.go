package main

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/iocp-go/iocp"
)

// call runs fn on one of pl's workers under ctx and hands back its
// result, as a plain function call would: it returns only once fn has
// returned, or, if ctx ends while fn is still queued, at once with
// ctx.Err() (fn then never runs).
//
// fn's context carries the worker that runs it, so that fn marks its waits
// with iocp.Blocking(ctx, ...), and the values of the caller's ctx; it
// ends when ctx ends or the pool closes.
//
// It is replaced by iocp.Call, which has this signature, once that lands
// in the library: the handler's one call of it then becomes iocp.Call.
// Until then it is written on today's API, Pool.Go and a done channel,
// with one gap: a task that Pool.Close discards while it is queued never
// runs and nothing tells its Go caller, so a call whose fn is discarded
// so waits until ctx ends. The service closes its pool only after
// http.Server.Shutdown has waited for every handler, so none is.
func call[T any](ctx context.Context, pl *iocp.Pool, fn func(ctx context.Context) (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	c := &callState[T]{done: make(chan struct{})}
	err := pl.Go(func(tctx context.Context) error {
		if !c.state.CompareAndSwap(callQueued, callRunning) {
			return nil // the caller gave up while fn was queued
		}
		// Closed on every way out, a panic or runtime.Goexit in fn too;
		// the pool reports those itself, with the stack, and the caller
		// gets errCallPanicked.
		defer close(c.done)
		c.err = errCallPanicked
		fctx, cancel := context.WithCancel(iocp.NewContext(ctx, iocp.FromContext(tctx)))
		defer cancel()
		stop := context.AfterFunc(tctx, cancel) // the pool closes
		defer stop()
		c.v, c.err = fn(fctx)
		// The result is the caller's: a task error would go to Pool.Wait
		// as well, and, with WithCancelOnError, cancel every other task.
		return nil
	})
	if err != nil {
		return zero, err // iocp.ErrClosed, or iocp.ErrQueueFull on a bounded port
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		if c.state.CompareAndSwap(callQueued, callAbandoned) {
			return zero, ctx.Err()
		}
		<-c.done // fn runs, and sees ctx end
	}
	return c.v, c.err
}

// callState is one call's: where fn stands, and its result, which the
// close of done publishes.
type callState[T any] struct {
	state atomic.Int32
	done  chan struct{}
	v     T
	err   error
}

const (
	callQueued int32 = iota
	callRunning
	callAbandoned
)

// errCallPanicked is call's error when fn panicked or called
// runtime.Goexit; the pool's error handler has the *iocp.PanicError.
var errCallPanicked = errors.New("call: fn panicked (the pool reported it)")
