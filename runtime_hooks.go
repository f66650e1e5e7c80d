package iocp

// The library's hooks into the Go runtime, each in this file: Blocking,
// with the context that carries a worker to it (NewContext, FromContext);
// FollowGOMAXPROCS, which has a port's concurrency value follow
// GOMAXPROCS; and the pprof labels and runtime/trace regions that a Pool's
// workers run in.
//
// The port cannot see a goroutine block: Go parks goroutines on mutexes,
// channels, sleeps and the network poller without telling anyone. The
// Windows kernel sees every wait of a thread and adjusts the port's count
// of running threads itself; here the worker says so, with Block and
// Unblock. The Blocking helpers keep the pairs balanced and let code far
// down a call chain, which holds only a context.Context, do it for the
// worker that runs it.

import (
	"context"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"time"
)

// Blocking runs fn with the worker marked blocked, and counts it as
// running again when fn returns or panics. Use it around anything that may
// wait long: a lock, a database call, a sleep, a channel receive. It
// panics as Block does if the worker is not running.
func (w *Worker) Blocking(fn func()) {
	w.Block()
	defer w.Unblock()
	fn()
}

type workerKey struct{}

// NewContext returns a copy of ctx that carries w, for code called by the
// worker's goroutine that needs to mark it blocked (see Blocking). The
// context must not be used to block w from another goroutine.
func NewContext(ctx context.Context, w *Worker) context.Context {
	return context.WithValue(ctx, workerKey{}, w)
}

// FromContext returns the worker that ctx carries, or nil.
func FromContext(ctx context.Context) *Worker {
	w, _ := ctx.Value(workerKey{}).(*Worker)
	return w
}

// Blocking runs fn with the worker carried by ctx (see NewContext) marked
// blocked. Without a worker in ctx, or when that worker is already blocked
// by an enclosing Blocking, it just runs fn: so library code may call it
// around every wait without knowing whether a port is involved.
func Blocking(ctx context.Context, fn func()) {
	w := FromContext(ctx)
	if w == nil {
		fn()
		return
	}
	if !blockable(w.state.Load()) {
		fn()
		return
	}
	w.Blocking(fn)
}

// FollowGOMAXPROCS makes a port made with concurrency 0 keep its
// concurrency value equal to runtime.GOMAXPROCS(0) as the program runs:
// the runtime changes GOMAXPROCS when the process's CPU limit changes
// (Go 1.25 and later, on Linux), and a program may call
// runtime.GOMAXPROCS itself. The port looks once a second, on
// a goroutine that exits when the port is closed. When the value grows,
// waiters are released into the new slots at once; when it shrinks,
// workers that run beyond it finish their packets, as after Unblock's
// overshoot, and no waiter is released until the count is below the new
// value. NewPort returns an error if the option is given with a
// concurrency other than 0. Without the option a port's concurrency value
// is fixed at creation (SPEC S1).
func FollowGOMAXPROCS() Option {
	return func(c *config) error {
		c.follow = true
		return nil
	}
}

// followInterval is how often a port made with FollowGOMAXPROCS reads
// GOMAXPROCS.
const followInterval = time.Second

// follow keeps p's concurrency value equal to GOMAXPROCS until p closes.
func (p *Port) follow() {
	t := time.NewTicker(followInterval)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
			p.setConcurrency(runtime.GOMAXPROCS(0))
		}
	}
}

// setConcurrency changes the concurrency value to c. A larger value
// releases waiters into the new slots if packets are queued. The store
// comes before release looks at the queue, which pairs with Post's push
// before its load of the value (see limiter.go): either Post sees the new
// value and releases, or release sees the packet.
func (p *Port) setConcurrency(c int) {
	if old := p.concurrency.Swap(int64(c)); int64(c) > old {
		p.release()
	}
}

// labeled runs fn, worker i's loop, with the pool's context and the pprof
// labels "iocp.port", the port's Name, and "iocp.worker", i (see Pool).
func (pl *Pool) labeled(i int, fn func(ctx context.Context)) {
	labels := pprof.Labels("iocp.port", pl.port.Name(), "iocp.worker", strconv.Itoa(i))
	pprof.Do(pl.ctx, labels, fn)
}

// packetRegion starts the runtime/trace region "iocp.packet" that a
// packet's handler runs in, for the caller to End; while runtime/trace is
// not tracing, it returns nil and costs one load.
func packetRegion(ctx context.Context) *trace.Region {
	if !trace.IsEnabled() {
		return nil
	}
	return trace.StartRegion(ctx, "iocp.packet")
}
