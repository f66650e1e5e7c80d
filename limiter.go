package iocp

// The runnable-count gate.
//
// A port decides when to release a waiter from three facts: how many
// workers run (R), how many wait (W) and whether a packet is queued. R and W
// live together in one word, the gate, so that a worker that gives up its
// slot and becomes a waiter does both in one atomic step, and so that Post
// reads both with one load. The queue is the third fact; it has its own
// words (internal/ring), and the argument against a lost wakeup is the classic
// one for two flags (Dekker's): every path that adds a packet, frees a slot
// or adds a waiter first makes its change and then reads the other two
// facts. sync/atomic operations are sequentially consistent
// (https://go.dev/ref/mem#atomic), so of two such paths at least one sees
// the other's change, and that one releases the waiter:
//
//   - Post: push the packet (the tail CAS), then load the gate.
//   - Block, Worker.Close, a Get that finds nothing: update the gate, then
//     look at the queue.
//   - A waiter: add itself to the gate, then look at the queue (under the
//     port's mutex, in releaseLocked).
//
// The concurrency value C is a fourth fact, but it changes only on a port
// that follows GOMAXPROCS, and the same argument covers it: the change
// stores C and then looks at the queue (setConcurrency), and every path
// above loads C after its own change.
//
// Layout of the gate word:
//
//	bits  0-31  R, workers counted as running; may exceed the concurrency
//	            value after Unblock (overshoot, SPEC S30)
//	bits 32-61  W, waiters parked on the port's stack; changed only with
//	            Port.mu held, so that W and the stack agree
//	bit  62     draining: Shutdown has begun; Post is refused
//	bit  63     closed: Close has begun
//
// R counts only workers, never goroutines that merely called Port.Get in
// between taking a slot and returning (S35); such a call holds a slot for
// the moments between its gate update and its return.

const (
	oneRunning = 1
	oneWaiter  = 1 << 32
	minusOne   = ^uint64(0) // adding it subtracts one running worker

	minusOneWaiter = ^uint64(oneWaiter) + 1 // adding it subtracts one waiter

	// Adding runningToWaiter turns a running worker into a waiter (R-1,
	// W+1); adding waiterToRunning turns a waiter into a running worker.
	runningToWaiter = uint64(oneWaiter - oneRunning)
	waiterToRunning = ^runningToWaiter + 1
	drainingBit     = 1 << 62
	closedBit       = 1 << 63

	runningMask = 1<<32 - 1
	waiterMask  = (1<<30 - 1) << 32

	// maxConcurrency keeps R clear of the waiters' bits however far
	// Unblock overshoots: R never exceeds the number of workers, and a
	// program with 2^31 live workers has other problems first.
	maxConcurrency = 1<<31 - 1
)

func running(g uint64) int { return int(g & runningMask) }
func waiters(g uint64) int { return int(g & waiterMask >> 32) }

// canRelease reports whether the gate word g lets a waiter go, should a
// packet be queued: the port is open, someone waits and a slot is free.
func (p *Port) canRelease(g uint64) bool {
	return g&closedBit == 0 && g&waiterMask != 0 && running(g) < p.Concurrency()
}

// starved reports whether the gate word g leaves a slot free with no
// waiter to take it: every worker that could run is blocked, or gone, and
// a packet queued now would wait for one of them. A pool then starts
// another worker (Pool.grow), as the Windows thread pool starts a thread
// when its threads block.
func (p *Port) starved(g uint64) bool {
	return g&closedBit == 0 && g&waiterMask == 0 && running(g) < p.Concurrency()
}

// starve tells the port's pool, if it has one, that packets wait with a
// slot free and nobody to take them.
func (p *Port) starve() {
	if pl := p.pool.Load(); pl != nil {
		pl.grow()
	}
}

// The gate bits that refuse a packet. Post is refused once Close or
// Shutdown has begun; the completion of an operation that started before
// Shutdown is still queued while the port drains, and refused only once
// it is closed.
const (
	refusePost       = closedBit | drainingBit
	refuseCompletion = closedBit
)

// refusing reports whether the gate word g refuses new Posts.
func refusing(g uint64) bool { return g&refusePost != 0 }

// freeSlot takes one running worker off the gate (Block, Worker.Close, the
// end of a one-shot Get) and releases a waiter into the slot if a packet is
// queued. The queue check comes after the gate update: see above.
//
// On a port with a backend it only counts: the kernel releases its own
// waiters. With no waiter to release, it tells the pool (starve).
func (p *Port) freeSlot() {
	g := p.gate.Add(minusOne)
	p.drainStep(g)
	switch {
	case p.native == nil && p.canRelease(g):
		if !p.q.Empty() {
			p.release()
		}
	case p.starved(g) && !p.queueEmpty():
		p.starve()
	}
}

// takeSlot counts one more running worker if R < C and reports whether it
// did.
func (p *Port) takeSlot() bool {
	for {
		g := p.gate.Load()
		if g&closedBit != 0 || running(g) >= p.Concurrency() {
			return false
		}
		if p.gate.CompareAndSwap(g, g+oneRunning) {
			p.drainBump(g) // the caller pops next: see drain.go
			return true
		}
	}
}
