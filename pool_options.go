package iocp

// The options of Port.NewPool.

import (
	"context"
	"fmt"
	"log"
	"time"
)

// A PoolOption configures a pool made by Port.NewPool.
type PoolOption func(*poolConfig) error

type poolConfig struct {
	onError       func(error)
	max           int
	retireAfter   time.Duration
	timings       bool
	stallLimit    time.Duration
	onStall       func(Stall)
	stallBlock    bool
	parent        context.Context
	cancelOnError bool
}

// WithContext makes ctx the parent of the context the pool's handlers and
// tasks run with: when ctx ends, theirs does. The pool itself goes on
// serving until it is closed. ctx must not be nil.
func WithContext(ctx context.Context) PoolOption {
	return func(c *poolConfig) error {
		if ctx == nil {
			return fmt.Errorf("%w: nil Context", ErrInvalid)
		}
		c.parent = ctx
		return nil
	}
}

// WithMaxWorkers bounds the workers of an elastic pool (see Pool): it
// starts workers beyond NewPool's n while every worker is blocked, up to
// max. max == n makes a fixed pool. Without it the maximum is 256, or n if
// that is more: past a few hundred, more workers for one port usually mean
// handlers stuck on one thing, which more goroutines do not fix. A max
// below n, which NewPool reports, or above 1<<20 is an error.
func WithMaxWorkers(max int) PoolOption {
	return func(c *poolConfig) error {
		if max < 1 || max > maxWorkers {
			return fmt.Errorf("%w: WithMaxWorkers(%d), out of range [1, %d]", ErrInvalid, max, maxWorkers)
		}
		c.max = max
		return nil
	}
}

// WithIdleTimeout sets how long a worker beyond NewPool's n waits for a
// packet before it retires; 10 seconds without it. d must be positive.
func WithIdleTimeout(d time.Duration) PoolOption {
	return func(c *poolConfig) error {
		if d <= 0 {
			return fmt.Errorf("%w: WithIdleTimeout(%v), not positive", ErrInvalid, d)
		}
		c.retireAfter = d
		return nil
	}
}

// The defaults of WithMaxWorkers and WithIdleTimeout.
const (
	defaultMaxWorkers  = 256
	defaultRetireAfter = 10 * time.Second
)

// maxWorkers bounds a pool: a million goroutines is well past any use of
// one, and a mistake such as NewPool(0) on a port of concurrency 1<<30
// gets an error instead of exhausting memory.
const maxWorkers = 1 << 20

// WithStallReport has the pool call fn, on a goroutine of its own, once for
// each packet whose handler has run longer than limit, so that a stuck
// handler, which holds a slot of the concurrency value, is seen; Stats
// counts those running so long now. The pool looks four times a limit. A
// handler that waits on purpose should say so with Blocking instead: it
// is then not counted against the port, though it is still reported.
// limit must be positive and fn not nil.
func WithStallReport(limit time.Duration, fn func(Stall)) PoolOption {
	return func(c *poolConfig) error {
		switch {
		case limit <= 0:
			return fmt.Errorf("%w: WithStallReport limit %v, not positive", ErrInvalid, limit)
		case fn == nil:
			return fmt.Errorf("%w: WithStallReport with a nil fn", ErrInvalid)
		}
		c.stallLimit, c.onStall = limit, fn
		return nil
	}
}

// WithStallAsBlocked has the pool count a handler that runs past the
// limit of WithStallReport as blocked, as if it had called Block: its
// slot of the concurrency value goes to a waiting worker, or to one the
// pool starts, so that handlers stuck on something the port cannot see
// do not hold up the queue. When such a handler returns, its worker takes
// a slot again as a new worker does, waiting if Concurrency workers run;
// a Block in it marks it blocked as usual, and after its Unblock the
// pool looks again. It needs WithStallReport, and a pure-Go port: a
// native port's running threads are the kernel's to count.
//
// A handler that has just ended may be caught as it ends: it is then
// counted as blocked for a moment, or its worker runs one more packet
// beyond the concurrency value, as after an Unblock.
func WithStallAsBlocked() PoolOption {
	return func(c *poolConfig) error {
		c.stallBlock = true
		return nil
	}
}

// WithTimings has the pool measure every packet: how long it waited in
// the port's queue, and how long its handler ran, into the two histograms
// of PoolStats. It costs two or three reads of the monotonic clock a
// packet (tens of nanoseconds), and allocates nothing; the histograms
// are each worker's own, summed by Stats. Packets queued before NewPool
// have no queue time.
func WithTimings() PoolOption {
	return func(c *poolConfig) error {
		c.timings = true
		return nil
	}
}

// WithCancelOnError has the first task of Pool.Go that returns an error,
// or panics, cancel the context of every task, as errgroup.WithContext
// does. Handlers' contexts are not affected.
func WithCancelOnError() PoolOption {
	return func(c *poolConfig) error {
		c.cancelOnError = true
		return nil
	}
}

// WithErrorHandler has the pool report handler panics to fn, each as a
// *PanicError, on the goroutine of the worker that recovered it, and the
// posted packets of a pool that has no handler. Without it the pool logs
// them with the log package, a panic's stack included, as net/http does
// for its handlers. fn must not be nil.
func WithErrorHandler(fn func(error)) PoolOption {
	return func(c *poolConfig) error {
		if fn == nil {
			return fmt.Errorf("%w: nil error handler", ErrInvalid)
		}
		c.onError = fn
		return nil
	}
}

// logPanic is a pool's error handler unless WithErrorHandler replaces it.
// A pool reports its handlers' panics, with their stacks, and posted
// packets that it has no handler for.
func logPanic(err error) {
	if pe, ok := err.(*PanicError); ok {
		log.Printf("%v\n%s", err, pe.Stack)
		return
	}
	log.Print(err)
}
