package iocp

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// A Worker takes packets from its port: the counterpart of a thread that
// calls GetQueuedCompletionStatus. Goroutines have no identity the library
// could use, so a worker is an explicit handle, made by Port.NewWorker and
// used by one goroutine at a time: its methods are not for concurrent use,
// except that any goroutine may read the port's Stats. The zero Worker is
// not usable, and a Worker must not be copied.
//
// The port counts a worker as running from the moment a Get hands it a
// packet until it calls Get again, calls Block, or closes (S26). A worker
// that waits on something else must say so with Block and Unblock (or
// Blocking), or the port goes on counting it as running.
//
// A worker that stops calling Get must be closed: see [Worker.Get] on idle
// workers.
//
// Close may be called from any goroutine, at any time, as net.Conn's may:
// a Get, TryGet or GetBatch in progress returns ErrClosed (or the packets
// it had already taken), and the worker's slot, if it held one, is freed.
// Its other methods belong to one goroutine at a time.
//
// Misuse panics with a message that starts with "iocp: ": two goroutines
// in Get on one worker, Get between Block and Unblock, Block when not
// running, and Unblock without Block. Two goroutines in Get are caught as
// soon as one of them has to wait; while both find packets at once,
// neither touches the worker's state, and nothing is corrupted.
type Worker struct {
	p *Port

	// state is one of the state* constants. The owning goroutine changes
	// it, and Close from any goroutine; the transitions are CAS, so that
	// Close and the owner agree on who moves it, and a second goroutine in
	// Get is caught instead of corrupting the counts. A Get that finds a
	// packet at once only loads it.
	state atomic.Int32

	// Waiter fields; see waiter.go.
	up, down *Worker   // stack links; guarded by p.mu
	handed   [1]Packet // the packet a release hands over; written before result, read after it
	// at is when the first packet the last Get returned was queued
	// (Port.now): 0 unless a pool measures queue waits (WithTimings).
	// A release writes it with handed.
	at     [1]int64
	result atomic.Uint32 // resultNone, resultPacket or resultClosed
	wake   chan struct{} // capacity 1: park here

	// retireAfter, if positive, ends a wait on the pure-Go port after that
	// long with errRetireTimeout, on timer, which the first such wait
	// makes; a pool's workers beyond its n set it (Pool.get).
	retireAfter time.Duration
	timer       *time.Timer

	nw *nativeWorker // a native port's worker (native.go); nil on the pure-Go port

	// own says the worker was made by NewWorker, and is counted in
	// Port.ownWorkers until it closes; c is a pool worker's counters,
	// nil for the rest. Both are read-only after the worker is made.
	own bool
	c   *workerCounters
}

// The states of a Worker. A worker counted in R is in stateRunning or
// stateIdle; Close moves any state but stateGetting to stateClosed, and
// stateGetting to stateClosing, which the Get in progress turns into
// stateClosed as it returns (leave).
const (
	stateNew     = iota // not counted: never took a packet, or the port closed under it
	stateRunning        // counted in R: it took a packet
	stateIdle           // counted in R, but its last Get returned none (S32); in Stats.Idle
	stateGetting        // inside Get, TryGet or GetBatch
	stateClosing        // inside Get, TryGet or GetBatch, and Close was called
	stateBlocked        // between Block and Unblock
	stateClosed
	// stateStalled: running a handler that its pool counts as blocked,
	// since it ran past the limit of WithStallAsBlocked (Worker.stall).
	// Not counted in R, and counted in Stats.Blocked, as a blocked worker
	// is. Its next Get takes a slot as a new worker does; Block moves it
	// to stateBlocked.
	stateStalled
)

// Get returns the oldest queued packet. If none is queued, or Concurrency
// workers already run, it waits: waiting workers are released most recent
// first, each with the oldest packet. Get first gives up the worker's slot,
// so a worker that calls Get in a loop drains a backlog without any other
// worker being woken (S27).
//
// Get returns ctx.Err() when ctx ends first, and ErrClosed once the port or
// the worker is closed.
//
// A Get (or GetBatch) that ends by its context, and a TryGet that finds
// nothing, return with the worker counted as running again (S32), as a
// thread whose wait timed out is: the worker is idle, and holds one of the
// port's Concurrency slots until it calls Get again, Block, or Close. A
// worker that stops calling Get must therefore be closed, or the port runs
// with one slot fewer for good; [Stats].Idle counts the idle workers.
func (w *Worker) Get(ctx context.Context) (Packet, error) {
	mustContext(ctx)
	var buf [1]Packet
	n, err := w.get(ctx, buf[:], true)
	w.p.settleAll(buf[:n])
	return buf[0], err
}

// TryGet is Get that does not wait: with a packet queued and a slot free it
// returns the packet and true; otherwise false at once, and the worker is
// idle (see [Worker.Get]). On a closed port or worker it returns false.
func (w *Worker) TryGet() (Packet, bool) {
	var buf [1]Packet
	n, _ := w.get(context.Background(), buf[:], false)
	w.p.settleAll(buf[:n])
	return buf[0], n == 1
}

// errEmptyBatch is GetBatch's answer to an empty dst.
var errEmptyBatch = fmt.Errorf("%w: GetBatch with an empty dst", ErrInvalid)

// mustContext panics on a nil context before a call changes any state:
// a Get that parked with one would fail only when the context is read,
// with its worker on the waiter stack and its packet handed to it.
func mustContext(ctx context.Context) {
	if ctx == nil {
		panic("iocp: nil Context")
	}
}

// GetBatch is GetQueuedCompletionStatusEx: it fills dst with up to len(dst)
// packets, oldest first, and returns how many. With packets queued it
// returns at once with what is there; otherwise it waits as Get does and
// returns the packet it was handed plus those queued at that moment. It
// counts as one worker, whatever the number of packets (S9). An empty dst
// is an error that matches ErrInvalid.
//
// A batch keeps the queue's order, and every packet in it was queued at
// some moment during the call, but it is not a snapshot of one instant: it
// takes what it finds as it goes, so it may hold a packet posted while the
// call ran, even after another worker's TryGet found the queue empty.
func (w *Worker) GetBatch(ctx context.Context, dst []Packet) (int, error) {
	mustContext(ctx)
	if len(dst) == 0 {
		return 0, errEmptyBatch
	}
	n, err := w.get(ctx, dst, true)
	w.p.settleAll(dst[:n])
	return n, err
}

// get takes up to len(dst) packets, waiting for one if block, and returns
// how many. Their Overlappeds are not settled yet: the caller settles them
// (settleAll, or a pool's settleOne).
func (w *Worker) get(ctx context.Context, dst []Packet, block bool) (int, error) {
	p := w.p
	if p.native != nil {
		return w.getNative(ctx, dst, block)
	}
	// Fast path: a running worker under the concurrency value takes a
	// queued packet and stays running. It gives up its slot and takes it
	// back in one step, so it touches neither the gate (S24, S27) nor its
	// own state: only the queue's words. With overshoot (R > C), giving
	// the slot up leaves R >= C, and it must wait. A Close that comes
	// meanwhile finds the worker running, and frees its slot after the
	// packet was taken with it: nothing is counted twice.
	looked := false // the fast path found the queue empty: wait looks again
	if w.state.Load() == stateRunning {
		g := p.gate.Load()
		if g&closedBit == 0 && running(g) <= p.Concurrency() {
			if n := p.take(dst, w.at[:]); n > 0 {
				return n, nil
			}
			looked = true
		}
	}
	prev := w.enter()
	if prev == stateClosed {
		return 0, w.closed()
	}
	counted := prev == stateRunning || prev == stateIdle
	g := p.gate.Load()
	if g&closedBit != 0 {
		if counted {
			p.freeSlot()
		}
		w.leave(false, false)
		return 0, ErrClosed
	}
	if counted && running(g) <= p.Concurrency() && !looked || !counted && p.takeSlot() {
		counted = true
		if n := p.take(dst, w.at[:]); n > 0 {
			w.leave(true, true)
			return n, nil
		}
	}
	if !block {
		if !counted {
			p.gate.Add(oneRunning) // S32, even past the concurrency value
		}
		return 0, w.leave(true, false)
	}
	switch err := w.wait(ctx, counted); err {
	case nil:
	case ErrClosed: // the port or the worker; wait gave the slot up
		w.leave(false, false)
		return 0, w.closed()
	default: // ctx ended: counted again (S32)
		if cerr := w.leave(true, false); cerr != nil {
			return 0, cerr
		}
		return 0, err
	}
	dst[0] = w.handed[0]
	w.handed[0] = Packet{}
	n := 1 + p.take(dst[1:], nil)
	w.leave(true, true)
	return n, nil
}

// enter moves w into stateGetting and returns the state it left, or
// stateClosed if w is closed or closing.
func (w *Worker) enter() int32 {
	for {
		s := w.state.Load()
		switch s {
		case stateClosed, stateClosing:
			return stateClosed
		case stateGetting:
			panic("iocp: two goroutines in Get on one Worker")
		case stateBlocked:
			panic("iocp: Get on a blocked Worker; call Unblock first")
		}
		if w.state.CompareAndSwap(s, stateGetting) {
			switch s {
			case stateIdle:
				w.p.idle.Add(-1)
			case stateStalled:
				// Out of Blocked, into no count until it takes a slot:
				// with its handler done it can make no work, and a
				// draining port may be waiting for this (see drain.go).
				w.p.blocked.Add(-1)
				w.p.drainStep(w.p.gate.Load())
			}
			return s
		}
	}
}

// leave ends a call that enter began. got says whether the call returns
// packets, counted whether the worker holds a slot: it becomes running
// with packets, idle with a slot and none, and new with neither (the port
// closed under it). If Close came during the call, leave closes the
// worker instead, frees the slot it held, and returns ErrClosed; the call
// still returns the packets it took, which are delivered, not lost.
func (w *Worker) leave(counted, got bool) error {
	next := int32(stateNew)
	switch {
	case got:
		next = stateRunning
	case counted:
		next = stateIdle
		w.p.idle.Add(1) // before the CAS, so that Idle never goes below 0
	}
	if w.state.CompareAndSwap(stateGetting, next) {
		return nil
	}
	// stateClosing: only Close moves w out of stateGetting.
	if next == stateIdle {
		w.p.idle.Add(-1)
	}
	w.state.Store(stateClosed)
	if counted {
		w.p.freeSlot()
	}
	return w.closed()
}

// errWorkerClosed is what the calls of a closed worker return while its
// port is open: it matches ErrClosed, and says which was closed.
var errWorkerClosed error = workerClosedError{}

type workerClosedError struct{}

func (workerClosedError) Error() string        { return "iocp: worker closed" }
func (workerClosedError) Is(target error) bool { return target == ErrClosed }

// closed returns the error of a call on w, which is closed: ErrClosed if
// its port is closed too, errWorkerClosed if not.
func (w *Worker) closed() error {
	if w.p.gate.Load()&closedBit != 0 {
		return ErrClosed
	}
	return errWorkerClosed
}

// Block marks the running worker as waiting on something other than the
// port: the number of workers the port counts as running (R, which
// Stats.Running reports) drops by one and, if that frees a slot while
// packets are queued, the most recent waiter is released with the oldest
// packet (S29). Call Unblock when the wait is over. Block panics if the
// worker is not running.
func (w *Worker) Block() {
	for {
		s := w.state.Load()
		if !blockable(s) {
			panic("iocp: Block on a Worker that is not running (" + stateName(s) + ")")
		}
		if !w.state.CompareAndSwap(s, stateBlocked) {
			continue // Close, from another goroutine, or its pool's stall
		}
		if s == stateStalled {
			return // counted as blocked already, and its slot freed
		}
		if s == stateIdle {
			w.p.idle.Add(-1)
		}
		w.p.blocked.Add(1)
		w.p.drainBump(w.p.gate.Load()) // between the two steps: see drain.go
		w.p.freeSlot()
		return
	}
}

// Unblock ends a Block: the worker is counted as running again at once,
// even if that takes R past the concurrency value (S30). The port then
// releases no waiter until R drops below it (S31). Unblock panics without
// a matching Block. A worker that another goroutine closed during its
// Block stays closed: Unblock then does nothing.
func (w *Worker) Unblock() {
	if !w.state.CompareAndSwap(stateBlocked, stateRunning) {
		s := w.state.Load()
		if s == stateClosed {
			return
		}
		panic("iocp: Unblock without Block (" + stateName(s) + ")")
	}
	// R grows before Blocked shrinks, so that a draining port never sees
	// the worker in neither count (see Port.Shutdown).
	w.p.gate.Add(oneRunning)
	w.p.blocked.Add(-1)
}

// stall counts w, which runs a handler, as blocked, as if it had called
// Block (WithStallAsBlocked): its slot is freed, which may release a
// waiter or start a worker. It is called by the pool's watcher, from its
// own goroutine, and does nothing unless w is running and still runs the
// handler that the watcher judged, the one whose start it read as s from
// started. started is read again after the state moved, so that a
// handler that ended just before is seen: w is then moved back and
// nothing else changes, unless its goroutine saw stateStalled first (a
// Get, a Block or a Close) and acted on it, in which case the slot is
// freed here as for any stall.
func (w *Worker) stall(started *atomic.Int64, s int64) bool {
	p := w.p
	p.blocked.Add(1) // before the CAS, so that Blocked never goes below 0
	if !w.state.CompareAndSwap(stateRunning, stateStalled) {
		p.blocked.Add(-1)
		return false
	}
	if started.Load() != s && w.state.CompareAndSwap(stateStalled, stateRunning) {
		p.blocked.Add(-1)
		return false
	}
	p.drainBump(p.gate.Load()) // between the two steps, as in Block
	p.freeSlot()
	return true
}

// Close ends the worker, as a thread's exit does: a running worker's slot
// is freed and may release a waiter with a queued packet (S33). Later calls
// return ErrClosed, or false from TryGet; Close of a closed worker returns
// ErrClosed.
//
// Close may be called from any goroutine. A Get, TryGet or GetBatch in
// progress then returns ErrClosed (or the packets it took before Close
// reached it, which are its own), and its slot is freed as it returns.
// On a native port, a worker's thread is the kernel's to count until the
// worker's own goroutine returns from its Get or makes one more call; a
// Get in progress is interrupted at once.
func (w *Worker) Close() error {
	p := w.p
	for {
		s := w.state.Load()
		switch s {
		case stateClosed, stateClosing:
			w.unbindHere() // closed by another goroutine since its last call
			return w.closed()
		case stateGetting:
			if !w.state.CompareAndSwap(s, stateClosing) {
				continue
			}
			// The Get sees stateClosing as it leaves; if it waits, it is
			// woken.
			if w.nw != nil {
				p.native.interrupt(&w.nw.t)
			} else {
				p.dropWaiter(w)
			}
			w.disown()
			return nil
		}
		if !w.state.CompareAndSwap(s, stateClosed) {
			continue
		}
		w.disown()
		w.unbindHere()
		switch s {
		case stateIdle:
			p.idle.Add(-1)
			p.freeSlot()
		case stateRunning:
			p.freeSlot()
		case stateBlocked, stateStalled:
			p.blocked.Add(-1)
			p.drainStep(p.gate.Load())
		}
		return nil
	}
}

// disown ends a worker of one's own's count (Port.ownWorkers), once: only
// the Close whose CAS closed it calls it.
func (w *Worker) disown() {
	if w.own {
		w.p.ownWorkers.Add(-1)
	}
}

// blockable reports whether a worker in state s may Block: it runs, as
// far as its goroutine knows (a stalled worker's handler runs on).
func blockable(s int32) bool {
	return s == stateRunning || s == stateIdle || s == stateStalled
}

func stateName(s int32) string {
	switch s {
	case stateNew:
		return "never ran"
	case stateRunning, stateIdle, stateStalled:
		return "running"
	case stateGetting, stateClosing:
		return "in Get"
	case stateBlocked:
		return "blocked"
	}
	return "closed"
}
