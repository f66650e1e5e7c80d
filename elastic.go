package iocp

// Elastic growth and retirement: a pool starts workers while every worker
// is blocked and packets wait (grow), and those beyond NewPool's n retire
// after WithIdleTimeout without a packet (get, retire).

import (
	"context"
	"errors"
)

// errRetired ends the Get of a worker that retires.
var errRetired = errors.New("iocp: worker retired")

// get takes a worker's next packet; the port's Close ends the wait
// (ErrClosed). While the pool has more than n workers, a worker that is
// given no packet for the retire timeout (WithIdleTimeout) retires
// (errRetired), if the pool still has more than n by then. On the pure-Go
// port the wait's timer is the worker's own, made once; on a native port
// the wait takes a context with a deadline, which allocates, as its kernel
// wait with any context that can end does.
func (pl *Pool) get(w *Worker, m *member, buf []Packet) (int, error) {
	for {
		if pl.size.Load() <= int64(pl.n) {
			return w.get(context.Background(), buf, true)
		}
		var n int
		var err error
		if pl.port.native == nil {
			w.retireAfter = pl.retireAfter
			n, err = w.get(context.Background(), buf, true)
			w.retireAfter = 0
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), pl.retireAfter)
			n, err = w.get(ctx, buf, true)
			cancel()
		}
		if err != errRetireTimeout && err != context.DeadlineExceeded {
			return n, err
		}
		if pl.retire(m.i) {
			return 0, errRetired
		}
	}
}

// grow starts one more worker if the pool may have one and none is
// starting: the port calls it when packets wait with a slot free and no
// worker to take it (Port.starve). One start at a time, each ending with
// the new worker's first Get (arrived), bounds the workers started for
// one such moment to those it needs: a worker that starts and finds the
// port still starved starts the next.
func (pl *Pool) grow() {
	if pl.starting.Load() != 0 || pl.size.Load() >= int64(pl.max) {
		return // the fast answer, without mu, on every starved Post
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.starting.Load() != 0 || pl.size.Load() >= int64(pl.max) || !pl.join() {
		return
	}
	var i int
	if k := len(pl.spare); k > 0 {
		i, pl.spare = pl.spare[k-1], pl.spare[:k-1]
	} else {
		cs := *pl.counters.Load()
		i = len(cs)
		cs = append(cs[:i:i], pl.newCounters()) // a new array: Stats reads the old
		pl.counters.Store(&cs)
	}
	pl.size.Add(1)
	pl.starting.Add(1)
	pl.grown.Add(1)
	go pl.serve(i, true)
}

// join counts one more goroutine of the pool's, unless the last has
// returned or the port has closed.
func (pl *Pool) join() bool {
	for {
		n := pl.live.Load()
		if n == 0 || pl.port.gate.Load()&closedBit != 0 {
			return false
		}
		if pl.live.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// arrived ends a start: a new worker's first Get has returned. If the port
// is still starved, it starts the next.
func (pl *Pool) arrived() {
	pl.starting.Add(-1)
	p := pl.port
	if p.starved(p.gate.Load()) && !p.queueEmpty() {
		pl.grow()
	}
}

// retire takes one worker off the pool, if it has more than n, and
// reports whether it did. The worker's index goes to the next to start.
func (pl *Pool) retire(i int) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.size.Load() <= int64(pl.n) {
		return false
	}
	pl.size.Add(-1)
	pl.retired.Add(1)
	pl.spare = append(pl.spare, i)
	return true
}

// exit ends one of the pool's goroutines: the last one cancels the
// handlers' context and closes done.
func (pl *Pool) exit() {
	if pl.live.Add(-1) == 0 {
		pl.cancel()
		close(pl.done)
	}
}
