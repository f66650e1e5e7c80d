package iocp

// Shutdown's drain: when a draining port is quiet.
//
// Shutdown closes the port once nothing it has accepted can still make
// work: no packet is queued, no worker is counted as running or blocked (a
// worker that holds a packet may start operations), and no operation that
// completes by itself is pending: writes, positional operations and
// functions, whose packets are on their way. Operations that wait on a
// peer (reads, accepts) do not hold the drain up; the Close that ends it
// aborts them, as http.Server.Shutdown closes connections that wait for a request. A pool's
// close first aborts every operation, then waits for all of them
// (quiet(true)), so that their packets reach the handlers.
//
// Work moves from one of these counts to another, and a check that reads
// them one after another could miss a packet in transit. Every move adds
// to its destination before it takes from its source, and quiet reads the
// counts in an order that follows most moves:
//
//	blocked, then R (in the gate), then ops, then the queue
//
//   - Unblock (blocked to R): R+1, then blocked-1. Blocked is read first:
//     if quiet missed the worker there, it finds it in R.
//   - A worker starts an operation (R or blocked to ops): ops+1 while the
//     worker is counted. R is read before ops.
//   - A completion (ops to the queue): the post, then ops-1. Ops is read
//     before the queue.
//
// Two moves go against that order: Block (R to blocked) and a pop into a
// slot just reserved (the queue to R: a waiter released, or a worker that
// took a free slot). While the port drains, each bumps drainSeq between
// its two steps, and quiet reads drainSeq before and after the counts: if
// it missed the first step and saw the second, it sees the bump too. A
// running worker that takes its next packet keeps its slot: that move
// stays inside R and needs no bump. All of these are sequentially
// consistent atomics (https://go.dev/ref/mem#atomic).
//
// A native port's kernel hands a packet to a waiting thread before the
// worker counts itself running again, so there a Shutdown may close the
// port while a worker is just back from its wait with a packet, whose new
// operations then return ErrClosed.
//
// Shutdown waits on drainWake for a move worth another look: one that
// takes from R, blocked or ops while the port drains sends a token. The
// channel holds one, so a token is never lost and many collapse into one.
// The move changes its count and then loads the gate; Shutdown sets the
// draining bit and then calls quiet: either the move sees the bit and
// sends, or quiet sees the move. A Shutdown that finds the port quiet
// passes a token on, for any other Shutdown waiting.

import "context"

// drainStep is called after a move that takes from R, blocked or ops,
// with the gate as the move left it or as loaded after it: if the port
// drains, a Shutdown may be waiting for the move.
func (p *Port) drainStep(g uint64) {
	if g&drainingBit != 0 {
		select {
		case p.drainWake <- struct{}{}:
		default: // a token is there already
		}
	}
}

// drainBump marks a move against quiet's order, between its two steps,
// if the port drains (g).
func (p *Port) drainBump(g uint64) {
	if g&drainingBit != 0 {
		p.drainSeq.Add(1)
	}
}

// quiet reports whether the draining port is quiet: no packet queued, no
// worker counted as running or blocked, and no operation pending that
// completes by itself, or, with all, none pending at all. Port.ops keeps
// both counts: see opsDelta (handle.go).
func (p *Port) quiet(all bool) bool {
	seq := p.drainSeq.Load()
	if p.blocked.Load() != 0 || running(p.gate.Load()) != 0 {
		return false
	}
	ops := p.ops.Load()
	pending := ops >> 32
	if all {
		pending = ops & (opsOutbound - 1)
	}
	return pending == 0 && p.queueEmpty() && p.drainSeq.Load() == seq
}

// drain waits until the draining port is quiet (see quiet), the port is
// closed, or ctx ends (ctx.Err()).
func (p *Port) drain(ctx context.Context, all bool) error {
	for !p.quiet(all) {
		select {
		case <-p.drainWake:
		case <-p.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p.drainStep(drainingBit) // pass the token on
	return nil
}

// beginDrain starts a drain: new Posts and Accepts are refused from here
// on, and the Accepts pending on the port's listeners are aborted, as
// http.Server.Shutdown closes its listeners. It reports false if the port
// is closed.
func (p *Port) beginDrain() bool {
	if p.gate.Or(drainingBit)&closedBit != 0 {
		return false
	}
	for _, h := range p.handleList(false) {
		if h.ln != nil {
			h.CancelAll()
		}
	}
	return true
}

// Shutdown closes the port gracefully. It refuses new Posts and new
// Accepts at once (they return ErrClosed) and aborts the Accepts pending,
// then waits until the port is quiet: no packet queued, no worker counted
// as running or blocked, and no write, positional operation or function
// pending on a handle. Workers go on taking packets meanwhile, and the
// handles' other operations, new ones included, run as usual; Associate
// works too. Then it closes the port (Close), which aborts what is still
// pending, reads and accepts waiting on a peer, and discards their
// packets, as Windows does.
//
// If ctx ends first, Shutdown returns ctx.Err() and leaves the port
// draining, with nothing dropped: workers go on, Shutdown may be called
// again, and Close discards what is left and counts it. Shutdown returns
// nil if the port is closed, whether by it or by Close.
//
// A worker that holds its slot without calling Get again (see
// Stats.Idle) keeps the drain from finishing.
func (p *Port) Shutdown(ctx context.Context) error {
	mustContext(ctx)
	if !p.beginDrain() {
		return nil
	}
	if err := p.drain(ctx, false); err != nil {
		return err
	}
	if err := p.drainSealed(ctx, false); err != nil {
		return err
	}
	return p.Close()
}

// drainSealed seals a quiet port and drains it once more. A Post that
// passed its check before the draining bit was set may push its packet
// after drain found the port quiet: once the queue refuses pushes, every
// such packet is queued or its Post returns ErrClosed, and this drain
// delivers what is queued, so that a Shutdown that returns nil delivered
// every packet whose Post returned nil. Operations that start after the
// seal return ErrClosed, and completions are refused from then on, as
// after Close.
func (p *Port) drainSealed(ctx context.Context, all bool) error {
	p.sealPosts()
	return p.drain(ctx, all)
}

// sealPosts makes the port refuse every packet from here on: Post returns
// ErrClosed, and so do the starts of operations. Every Post that returns
// nil, before or during it, has queued its packet by the time it returns.
func (p *Port) sealPosts() {
	if p.sealed.Swap(true) {
		return
	}
	if p.native != nil {
		p.native.seal()
		return
	}
	p.q.Refuse()
}
