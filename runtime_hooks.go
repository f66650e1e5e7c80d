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
	"sync/atomic"
	"time"
)

// Blocking runs fn with the worker marked blocked, and counts it as
// running again when fn returns or panics. Use it around what waits: a
// network call, a disk read, a lock, a sleep, a channel receive; not
// around computation in the process (an in-process database's query is
// computation), which would only run more goroutines than there are CPUs.
// It panics as Block does if the worker is not running.
//
// For a worker of a Pool on a pure-Go port, Blocking frees the worker's
// slot only while the CPU has room: when the process already uses its
// GOMAXPROCS, the region keeps its slot until the CPU has room again, so
// that a region that in fact computes cannot oversubscribe the CPU
// (pace.go has the rule). Block and Unblock are always exact.
func (w *Worker) Blocking(fn func()) {
	if c := w.c; c != nil && w.p.native == nil {
		if c.region.Load() != 0 {
			fn() // inside a region that kept its slot
			return
		}
		if pl := w.p.pool.Load(); pl != nil && blockable(w.state.Load()) {
			pl.blocking(w, c, fn)
			return
		}
	}
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

// Blocking runs fn with the worker carried by ctx marked blocked, as
// Worker.Blocking does. The contexts that a Pool gives its handlers and
// the functions of Go, Call and Group carry their worker; NewContext
// makes one for a worker of one's own. When that worker is already
// blocked by an enclosing Blocking, it just runs fn: so library code may
// call it around every wait without knowing whether a port is involved.
//
// Without a worker in ctx it runs fn and frees no slot, which is what
// happens when a handler passes its request's context instead of the one
// its pool gave it: Stats.NoWorker counts those calls, so that the
// mistake shows. A nil ctx panics.
func Blocking(ctx context.Context, fn func()) {
	mustContext(ctx)
	w := FromContext(ctx)
	switch {
	case w == nil:
		noWorker.Add(1)
		fn()
	case !blockable(w.state.Load()):
		fn()
	default:
		w.Blocking(fn)
	}
}

// noWorker counts the calls of Blocking whose context carried no worker,
// for Stats.NoWorker.
var noWorker atomic.Uint64

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
