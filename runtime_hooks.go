package iocp

import "context"

// Helpers around Block and Unblock.
//
// The port cannot see a goroutine block: Go parks goroutines on mutexes,
// channels, sleeps and the network poller without telling anyone. The
// Windows kernel sees every wait of a thread and adjusts the port's count
// of running threads itself; here the worker says so. These helpers keep
// the pairs balanced and let code far down a call chain, which holds only
// a context.Context, do it for the worker that runs it.

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
	if w == nil || w.state.Load() != stateRunning {
		fn()
		return
	}
	w.Blocking(fn)
}
