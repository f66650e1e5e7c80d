package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/iocp-go/iocp"
)

// newTestPool is a pool of one worker on a port of concurrency 1, whose
// panics go to onErr.
func newTestPool(t *testing.T, onErr func(error)) *iocp.Pool {
	t.Helper()
	port, err := iocp.NewPort(1)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := port.NewPool(1, nil, iocp.WithMaxWorkers(1), iocp.WithErrorHandler(onErr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pl.Close() })
	return pl
}

func TestCallResult(t *testing.T) {
	pl := newTestPool(t, func(err error) { t.Error(err) })
	type key struct{}
	ctx := context.WithValue(context.Background(), key{}, "v")
	got, err := call(ctx, pl, func(ctx context.Context) (string, error) {
		if iocp.FromContext(ctx) == nil {
			return "", errors.New("fn's context carries no worker")
		}
		return ctx.Value(key{}).(string), nil
	})
	if got != "v" || err != nil {
		t.Fatalf("call = %q, %v; want the caller's value, nil", got, err)
	}
	want := errors.New("fn's error")
	if _, err := call(ctx, pl, func(context.Context) (int, error) { return 0, want }); err != want {
		t.Fatalf("call's error = %v, want fn's", err)
	}
}

// A call whose context ends while fn is queued returns at once, and fn
// never runs.
func TestCallCancelledWhileQueued(t *testing.T) {
	pl := newTestPool(t, func(err error) { t.Error(err) })
	release := make(chan struct{})
	busy := make(chan struct{})
	pl.Go(func(context.Context) error { close(busy); <-release; return nil }) // holds the only worker
	<-busy
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	ran := false
	_, err := call(ctx, pl, func(context.Context) (int, error) { ran = true; return 1, nil })
	close(release)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call = %v, want the context's error", err)
	}
	if err := pl.Wait(); err != nil || ran {
		t.Fatalf("Wait = %v, fn ran %v; want nil, false", err, ran)
	}
}

// A call whose fn panics returns an error; the pool reports the panic.
func TestCallPanic(t *testing.T) {
	reported := make(chan error, 1)
	pl := newTestPool(t, func(err error) { reported <- err })
	_, err := call(context.Background(), pl, func(context.Context) (int, error) { panic("boom") })
	if !errors.Is(err, errCallPanicked) {
		t.Fatalf("call = %v, want errCallPanicked", err)
	}
	var pe *iocp.PanicError
	if err := <-reported; !errors.As(err, &pe) || pe.Value != "boom" {
		t.Fatalf("the pool reported %v, want the panic", err)
	}
}
