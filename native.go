package iocp

import (
	"context"
	"runtime"
	"sync/atomic"
)

// A backend is a port's queue and scheduler when they are not the pure-Go
// ones: on Windows, a kernel completion port (WithNative). A port with a
// backend keeps its gate word for the closed and draining bits and for
// Stats' counts of running and waiting workers, but releases nobody
// itself: the kernel decides which thread takes which packet, and when,
// from the threads it sees wait. The Worker state machine, the misuse
// checks, the association of Go sources and the Overlapped bookkeeping
// are the same for both.
//
// A worker of a backend runs on one OS thread from its first Get until it
// closes: Worker.bind locks the goroutine's thread and attaches it, and
// Worker.unbind detaches it and unlocks it. The contract:
//
//   - post queues *pkt unchanged at the tail of the queue, or returns
//     ErrQueueFull (a port made with WithQueueLimit whose queue is full) or
//     ErrClosed (after close began), queuing nothing. It never blocks.
//   - get takes up to len(dst) packets for the thread t, which is the
//     calling thread, oldest first, and returns how many. Without block it
//     returns (0, nil) when nothing can be taken at once. With block it
//     waits until a packet is handed to t, ctx ends (ctx.Err()), or the port
//     closes (ErrClosed); a wait with a deadline never ends before it.
//   - attach makes t the calling thread, which the caller has locked;
//     current reports whether the calling thread is t; detach ends t's
//     association with the port, so that the kernel no longer counts it, and
//     gives back what attach took. detach runs on t.
//   - seal makes post return ErrClosed from here on; every post that
//     returns nil, before or during seal, has queued its packet by the
//     time seal returns.
//   - interrupt, from any goroutine, makes t's get return ErrClosed: the
//     one waiting, or the next one to wait, if t is attached; it does
//     nothing for a t that is not. It is Worker.Close of a worker in Get.
//   - len returns the number of posted packets not yet taken.
//   - close makes every get that waits, or will, return ErrClosed, and post
//     return ErrClosed; it drops what is queued and returns how many posted
//     packets it dropped, after calling drop for each. It is called once.
//
// The port does the rest: the refuse bits before post, the gate's counts
// around get, settling Overlappeds after it, and Shutdown's drain.
//
// Each platform's nativePort implements the interface (a stub where there
// is no native backend), and Port holds a *nativePort, not a backend: the
// compiler cannot see through a call by interface, so every packet and
// buffer passed to one would move to the heap, and the pure-Go port's Post
// and Get would allocate.
type backend interface {
	post(pkt *Packet) error
	get(t *thread, ctx context.Context, dst []Packet, block bool) (int, error)
	attach(t *thread)
	current(t *thread) bool
	detach(t *thread)
	interrupt(t *thread)
	seal()
	len() int
	close(drop func(*Packet)) int
}

// WithNative makes the port on the operating system's own completion
// ports, where there are such: on Windows, a kernel port made by
// CreateIoCompletionPort, whose scheduler releases the workers and
// enforces the concurrency value for their threads. Elsewhere NewPort
// returns an error for it. See the package documentation's "Native
// backend" for what changes for workers.
func WithNative() Option {
	return func(c *config) error {
		c.native = true
		return nil
	}
}

// queueLen returns the number of packets queued.
func (p *Port) queueLen() int {
	if p.native != nil {
		return p.native.len()
	}
	return p.q.Len()
}

// queueEmpty reports whether no packet is queued.
func (p *Port) queueEmpty() bool {
	if p.native != nil {
		return p.native.len() == 0
	}
	return p.q.Empty()
}

// nativeWorker is a native port's worker: the OS thread it runs on, from
// its first Get (bind) until it closes (unbind).
type nativeWorker struct {
	bound atomic.Bool // changed by the owning goroutine only; Close reads it
	t     thread
}

// unbindHere unbinds a native worker if the caller is the goroutine that
// bound it: a worker closed, perhaps by another goroutine, leaves the
// kernel's port at the next call its own goroutine makes. It does nothing
// on the pure-Go port.
func (w *Worker) unbindHere() {
	if w.nw != nil && w.nw.bound.Load() && w.p.native.current(&w.nw.t) {
		w.unbind()
	}
}

// getNative is get on a port with a backend, which decides who takes
// what; the gate only counts. The worker's thread is counted as running by
// the kernel from its first Get until it closes (bind), and as waiting
// while it is in the kernel's wait.
func (w *Worker) getNative(ctx context.Context, dst []Packet, block bool) (int, error) {
	p := w.p
	if w.nw.bound.Load() {
		w.mustBeOnThread("used")
	}
	prev := w.enter()
	if prev == stateClosed {
		w.unbind() // closed by another goroutine since its last call
		return 0, w.closed()
	}
	counted := prev == stateRunning || prev == stateIdle
	w.bind()
	// After bind: a Close from another goroutine that found no thread to
	// interrupt is seen here (see nativePort.interrupt).
	if p.gate.Load()&closedBit != 0 || w.state.Load() == stateClosing {
		if counted {
			p.freeSlot()
		}
		w.unbind()
		w.leave(false, false)
		return 0, w.closed()
	}
	// The slot is given up first, as get does; the kernel does the same
	// for the thread when it enters its wait.
	if counted {
		p.freeSlot()
	}
	if block {
		p.gate.Add(oneWaiter)
	}
	n, err := p.native.get(&w.nw.t, ctx, dst, block)
	if block {
		p.gate.Add(minusOneWaiter)
	}
	if err == ErrClosed {
		w.unbind()
		w.leave(false, false)
		return 0, err
	}
	p.gate.Add(oneRunning)
	if n > 0 && p.posters.Load() != 0 {
		p.noteRoom()
	}
	if cerr := w.leave(true, n > 0); cerr != nil {
		w.unbind()
		if n == 0 {
			return 0, cerr
		}
	}
	return n, err
}

// bind locks the calling goroutine to its OS thread and attaches the
// thread to the native backend, at a worker's first Get; later Gets check
// first that they run on that thread (mustBeOnThread). The kernel counts
// threads, not goroutines: a worker whose goroutine moved between threads
// would be counted on a thread that runs something else.
func (w *Worker) bind() {
	if w.nw.bound.Load() {
		return
	}
	runtime.LockOSThread()
	w.p.native.attach(&w.nw.t)
	w.nw.bound.Store(true)
}

// mustBeOnThread panics unless the caller runs on a bound worker's thread,
// that is, is the goroutine that bound it.
func (w *Worker) mustBeOnThread(verb string) {
	if !w.p.native.current(&w.nw.t) {
		panic("iocp: a native port's Worker " + verb + " by a goroutine other than the one that first called its Get")
	}
}

// unbind undoes bind, on the worker's own thread: the kernel stops counting
// the thread for the port, and the goroutine may move again.
func (w *Worker) unbind() {
	if !w.nw.bound.Load() {
		return
	}
	w.p.native.detach(&w.nw.t)
	w.nw.bound.Store(false)
	runtime.UnlockOSThread()
}

// closeNative is Close on a port with a backend.
func (p *Port) closeNative() error {
	if p.gate.Or(closedBit)&closedBit != 0 {
		return nil
	}
	n := p.native.close(func(pkt *Packet) {
		if ov := pkt.Overlapped; ov != nil {
			ov.discard()
		}
	})
	p.discarded.Add(uint64(n))
	close(p.done)
	p.closeHandles()
	return nil
}
