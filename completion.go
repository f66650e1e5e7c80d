package iocp

// Completions: the packets a port delivers, the Overlapped that carries
// an operation's result to the worker that dequeues it, and how a
// completion travels from the goroutine that ran the operation to that
// worker.

import (
	"context"
	"net"
)

// A Packet is one completion: what GetQueuedCompletionStatus returns.
// A Packet is a plain value; copying it copies the completion.
type Packet struct {
	Key        any         // the completion key: the handle's key, or what Post was given
	Bytes      int         // bytes transferred
	Overlapped *Overlapped // the operation this packet completes; may be nil for posted packets
	Err        error       // the operation's status; nil is success
}

// An Overlapped identifies one operation of a Handle and carries its
// caller's state from the start of the operation to the worker that
// dequeues its completion (SPEC S47): the worker finds it in
// Packet.Overlapped. A posted packet may carry any *Overlapped, or none.
//
// An Overlapped is pending from the call that starts an operation on it
// until the Get that dequeues the operation's packet; that Get fills in
// the result fields (S42), and the Overlapped may then start another
// operation. Starting one on a pending Overlapped returns ErrPending.
// While it is pending, the fields belong to the operation: set Value and
// Offset before the call that starts it (S46), and read the results after
// the packet is dequeued.
//
// The zero value is ready to use. An Overlapped must not be copied after
// first use. Distinct Overlappeds may be used concurrently.
type Overlapped struct {
	// Value is the caller's per-operation state. The library never reads
	// or writes it.
	Value any
	// Offset is where ReadAt and WriteAt read or write; it must not be
	// negative.
	Offset int64

	// The result, set by the Get that dequeues the operation's packet.
	Bytes int      // bytes transferred, as in the packet
	Err   error    // the operation's error, as in the packet
	Addr  net.Addr // ReadFrom: the sender's address
	Conn  net.Conn // Accept: the new connection, which the caller owns

	o opState // the library's, while an operation is pending
}

// complete hands ov's completion to the port. An operation that a cancel
// reached and that failed reports ErrAborted, with the source's error
// behind it; one that succeeded anyway keeps its result (S44).
//
// On a port with a queue limit, complete waits for room: a completion is
// never dropped for a full queue. On a closed port it is dropped, and
// counted in Stats.Discarded.
func (h *Handle) complete(ov *Overlapped, n int, err error, aborted bool) {
	o := &ov.o
	if aborted && err != nil {
		err = &abortError{err}
	}
	o.release()
	o.n, o.err = n, err
	// Marks the result as waiting for its dequeue; the post below, not
	// this store, publishes it to the Get that returns the packet (a post
	// is synchronized before that Get, as Post is).
	o.state.Store(ovDone)
	pkt := Packet{Key: h.key, Bytes: n, Overlapped: ov, Err: err}
	// Read before the post: once posted, ov may be dequeued and started
	// again.
	pending := opsDelta(o.lane)
	// On a port with a queue limit, wait for room: a completion is never
	// dropped for a full queue.
	if err := h.p.postWait(context.Background(), &pkt, refuseCompletion); err != nil {
		// ErrClosed: nobody will dequeue it.
		o.drop()
		h.p.discarded.Add(1)
	}
	// After the post (see drain.go): no longer pending.
	h.p.ops.Add(^(pending - 1))
	h.p.drainStep(h.p.gate.Load())
}

// abortError is the error of an operation that a cancel interrupted: it
// matches ErrAborted and unwraps to what the source returned.
type abortError struct{ cause error }

func (e *abortError) Error() string        { return "iocp: operation aborted: " + e.cause.Error() }
func (e *abortError) Unwrap() error        { return e.cause }
func (e *abortError) Is(target error) bool { return target == ErrAborted }

// settle copies a completed operation's result into ov's exported fields
// and makes ov idle. It runs in the goroutine that dequeues the packet,
// whose Get returns right after, so the caller reads the fields with no
// race (SPEC S42). A packet posted with an Overlapped that is not done
// leaves it alone. settle reports whether it settled a result.
func (ov *Overlapped) settle() bool {
	// The CAS, rather than a load, keeps two packets that carry one
	// Overlapped (a misuse of Post) from settling it at once.
	if ov.o.state.Load() != ovDone || !ov.o.state.CompareAndSwap(ovDone, ovSettling) {
		return false
	}
	// The result was written before the post that queued this packet, and
	// that post is synchronized before the Get running this code.
	o := &ov.o
	ov.Bytes, ov.Err, ov.Addr, ov.Conn = o.n, o.err, o.addr, o.conn
	o.n, o.err, o.addr, o.conn = 0, nil, nil, nil
	// Hands the Overlapped back: the CAS in the next start synchronizes
	// with this store, so that operation's writes come after this copy.
	o.state.Store(ovIdle)
	return true
}

// discard drops a completed operation's result, for a packet that Close
// takes off the queue: the Overlapped becomes idle, and a connection that
// an Accept made, which nobody will see, is closed.
func (ov *Overlapped) discard() {
	if ov.o.state.Load() != ovDone || !ov.o.state.CompareAndSwap(ovDone, ovSettling) {
		return
	}
	ov.o.drop()
}

// settleOne settles pkt's Overlapped, as settleAll does, and reports
// whether pkt completed an operation.
func (p *Port) settleOne(pkt *Packet) bool {
	return pkt.Overlapped != nil && p.associated.Load() && pkt.Overlapped.settle()
}

// settleAll settles the Overlapped of each packet in pkts, which a
// worker of p has just dequeued. On a port that has never had a handle no
// packet completes an operation, and the loop is skipped: Associate sets
// the flag before any operation can start, and the post of a completion
// is synchronized before the Get that runs this.
func (p *Port) settleAll(pkts []Packet) {
	if !p.associated.Load() {
		return
	}
	for i := range pkts {
		if ov := pkts[i].Overlapped; ov != nil {
			ov.settle()
		}
	}
}
