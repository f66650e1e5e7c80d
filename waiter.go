package iocp

import (
	"context"
	"errors"
	"runtime"
	"time"
)

// The LIFO waiter stack and the park/wake protocol.
//
// A worker that finds no packet, or no free slot, becomes a waiter: with
// Port.mu held it gives up its slot and adds itself to W in one gate CAS,
// pushes itself on the stack, and runs releaseLocked, which may release it
// at once. Otherwise it parks on its wake channel. A waiter is released by
// whoever frees a slot or adds a packet while waiters exist (Post, Block,
// Worker.Close, a waiter that registers): under mu, that goroutine reserves
// a slot and the top waiter in one gate CAS, takes the oldest packet from
// the queue, stores it in the waiter, pops the waiter off the stack and
// wakes it. So a released waiter owns its packet before it wakes (S23), and
// releases follow the stack from the top (S21, S22).
//
// Invariants, with Port.mu held:
//   - W in the gate equals the number of workers on the stack.
//   - A worker is on the stack if and only if its result is resultNone
//     and it is inside Get or GetBatch, past registration. It is on the
//     stack if and only if it is Port.top or its up link is set.
//   - Port.top is the most recent waiter; Worker.down is the one that
//     registered before it, Worker.up the one after it.
//
// Park protocol. The waker stores the packet in w.handed, then w.result (an
// atomic store that publishes w.handed), then sends a token on w.wake without
// blocking (the channel has room for one). The waiter yields a few times
// while it polls w.result, then blocks on w.wake, and after any token
// polls w.result again: a token may be stale, left by a release that the
// waiter had already seen while yielding. A waiter whose context ends
// takes mu and either finds itself released (it returns the packet: none
// is lost, S23) or removes itself from the stack (S32).
//
// Why a mutex here and not on the ring: parking is already the slow path,
// where the goroutine switch costs far more than an uncontended lock, and
// the lock is what makes "release the most recent waiter with the oldest
// packet" one step.

const (
	resultNone   = iota // waiting
	resultPacket        // released: w.handed holds the packet and w holds a slot
	resultClosed        // the port was closed
)

// spinYields is how many times a waiter yields before it parks. Each yield
// gives the goroutine that will release it (often the one it just woke, on
// the same P) a chance to do so before the waiter pays for a park.
const spinYields = 2

// signal releases w with result r. It is called with Port.mu held, after
// w has been taken off the stack.
func (w *Worker) signal(r uint32) {
	w.result.Store(r) // publishes w.handed to the waiter's load of result
	select {
	case w.wake <- struct{}{}:
	default: // a token is there already: a stale one, which serves as well
	}
}

// handOff gives *pkt straight to the top waiter when it can run and no
// packet is queued ahead of it, and reports whether it did. If one of the
// refuse bits was set while it waited for the mutex (Close, or Shutdown
// for a Post), it returns ErrClosed: the packet has not been queued, and
// is refused as one that came after them.
func (p *Port) handOff(pkt *Packet, refuse uint64) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		g := p.gate.Load()
		if g&refuse != 0 {
			return false, ErrClosed
		}
		if !p.canRelease(g) || !p.q.Empty() {
			return false, nil
		}
		if p.gate.CompareAndSwap(g, g+waiterToRunning) {
			break
		}
	}
	p.top.handed[0] = *pkt
	p.top.at[0] = p.now() // queued and taken at once
	p.wakeTop()
	return true, nil
}

// release runs releaseLocked with mu held.
func (p *Port) release() {
	p.mu.Lock()
	p.releaseLocked()
	p.mu.Unlock()
}

// releaseLocked releases waiters, most recent first, while packets are
// queued and slots are free.
func (p *Port) releaseLocked() {
	for {
		g := p.gate.Load()
		if !p.canRelease(g) || p.q.Empty() {
			// An empty queue needs no reservation. A push this look
			// misses is ordered after it, and so after the change to the
			// gate that made g (a waiter added, a slot freed): the Post's
			// load of the gate, which follows its push, sees that change
			// and releases under mu (see limiter.go).
			return
		}
		// Reserve the slot and the top waiter before taking a packet: a
		// packet taken cannot be put back at the head of the queue, a slot
		// can be given back.
		if !p.gate.CompareAndSwap(g, g+waiterToRunning) {
			continue
		}
		p.drainBump(g) // between the reservation and the pop: see drain.go
		w := p.top
		if p.take(w.handed[:], w.at[:]) == 0 {
			// A running worker took the packet first. Give back the slot
			// and the waiter, then look at the queue again: a Post that
			// pushed while the reservation stood may have seen no free slot
			// and left the release to us.
			p.drainStep(p.gate.Add(runningToWaiter))
			if p.q.Empty() {
				return
			}
			continue
		}
		p.wakeTop()
	}
}

// wakeTop releases the top waiter, for which a slot is reserved and whose
// packet is in its handed field: it leaves the stack and wakes. mu must be
// held.
func (p *Port) wakeTop() {
	w := p.popTop()
	p.wakeups.Add(1)
	w.signal(resultPacket)
}

// pushTop puts w on top of the stack. mu must be held.
func (p *Port) pushTop(w *Worker) {
	w.down = p.top
	if p.top != nil {
		p.top.up = w
	}
	p.top = w
}

// popTop takes the top waiter off the stack. mu must be held.
func (p *Port) popTop() *Worker {
	w := p.top
	p.top = w.down
	if p.top != nil {
		p.top.up = nil
	}
	w.down = nil
	return w
}

// unlink takes w off the stack wherever it is. mu must be held.
func (p *Port) unlink(w *Worker) {
	if w.up != nil {
		w.up.down = w.down
	} else {
		p.top = w.down
	}
	if w.down != nil {
		w.down.up = w.up
	}
	w.up, w.down = nil, nil
}

// wait makes w a waiter and returns when it is released with a packet
// (nil error), when the port closes (ErrClosed) or when ctx ends
// (ctx.Err()). counted says whether w holds a slot, which it gives up.
// On return with a packet, w.handed[0] holds it and w holds a slot again.
func (w *Worker) wait(ctx context.Context, counted bool) error {
	p := w.p
	p.mu.Lock()
	for {
		g := p.gate.Load()
		// Under mu: a Close of w that comes later finds w on the stack
		// (dropWaiter), one that came earlier is seen here.
		if g&closedBit != 0 || w.state.Load() == stateClosing {
			p.mu.Unlock()
			if counted {
				// As if it had registered and been woken by Close. Only an
				// open port's slot can release a waiter.
				p.freeSlot()
			}
			return ErrClosed
		}
		ng := g + oneWaiter
		if counted {
			ng += minusOne
		}
		if p.gate.CompareAndSwap(g, ng) {
			if counted {
				p.drainStep(ng)
			}
			break
		}
	}
	w.result.Store(resultNone)
	p.pushTop(w)
	// Now that this waiter is counted, look at the queue: a packet pushed
	// before the CAS above, whose Post saw no waiter, is taken here.
	p.releaseLocked()
	p.mu.Unlock()

	for range spinYields {
		if w.result.Load() != resultNone {
			return w.outcome()
		}
		runtime.Gosched()
	}
	done := ctx.Done() // nil for a context that never ends: the case never fires
	var expired <-chan time.Time
	if w.retireAfter > 0 {
		expired = w.armRetire()
		defer w.timer.Stop()
	}
	if done == nil && expired == nil { // a plain receive parks for less than a select
		for {
			<-w.wake
			if w.result.Load() != resultNone {
				return w.outcome()
			}
		}
	}
	for {
		select {
		case <-w.wake:
			if w.result.Load() != resultNone {
				return w.outcome()
			}
		case <-done:
			return w.leaveStack(ctx.Err())
		case <-expired:
			return w.leaveStack(errRetireTimeout)
		}
	}
}

// leaveStack ends a wait that ctx or the retire timer ended, with err,
// unless a release came first: the packet is then the waiter's.
func (w *Worker) leaveStack(err error) error {
	p := w.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.result.Load() != resultNone {
		return w.outcome()
	}
	p.unlink(w)
	// S32: the worker returns counted as running, even past the
	// concurrency value, as a thread whose wait timed out does. It did
	// not free a slot, so no release is due.
	p.gate.Add(waiterToRunning)
	return err
}

// errRetireTimeout ends a wait that lasted w.retireAfter without a
// packet: a pool's worker beyond its n that may retire (Pool.get).
var errRetireTimeout = errors.New("iocp: retire timeout")

// armRetire starts w's retire timer, made on first use and reused after: a
// wait allocates nothing. It returns the timer's channel. Since Go 1.23
// a timer's Reset leaves no stale value in it.
func (w *Worker) armRetire() <-chan time.Time {
	if w.timer == nil {
		w.timer = time.NewTimer(w.retireAfter)
	} else {
		w.timer.Reset(w.retireAfter)
	}
	return w.timer.C
}

// dropWaiter wakes w with ErrClosed if it waits on the stack: Close of a
// worker in Get, from another goroutine. A w that has not registered yet
// sees stateClosing when it does (wait); one already released keeps its
// packet.
func (p *Port) dropWaiter(w *Worker) {
	p.mu.Lock()
	if p.top == w || w.up != nil { // on the stack
		p.unlink(w)
		p.gate.Add(minusOneWaiter)
		w.signal(resultClosed)
	}
	p.mu.Unlock()
}

// outcome turns w.result into wait's error.
func (w *Worker) outcome() error {
	if w.result.Load() == resultClosed {
		return ErrClosed
	}
	return nil
}
