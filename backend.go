package iocp

import "context"

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
//     releases what attach took. detach runs on t.
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
	return p.q.len()
}

// queueEmpty reports whether no packet is queued.
func (p *Port) queueEmpty() bool {
	if p.native != nil {
		return p.native.len() == 0
	}
	return p.q.empty()
}
