package iocp

// Overlapped operations: the Overlapped, the library's half of it
// (opState), and the moves of its state from an operation's start to the
// Get that settles its result. The operation starts in handle.go
// (Handle.start), runs and completes in lane.go (Handle.complete hands its
// packet to the port), and is settled by the Get that dequeues the packet
// (Port.settleAll, completion.go).
//
// An Overlapped's state (opState.state) moves so, each move made by one
// function under the synchronization named:
//
//	from        to          by                          under
//	ovReady     ovPending   Handle.start                the CAS itself: of two starts, one wins
//	ovPending   ovReady     Handle.start, refused       the starting goroutine still owns it (reset)
//	ovPending   ovDone      Handle.complete             the goroutine that ran it, after Handle.finish under Handle.mu
//	ovDone      ovSettling  Overlapped.settle, discard  the CAS: of two packets carrying one Overlapped, one settles it
//	ovSettling  ovReady     settle, drop                the dequeuing goroutine; the next start's CAS synchronizes with this store
//	ovDone      ovReady     Handle.complete, refused    the completing goroutine: the port is closed and the result is dropped
//
// A Get that dequeues an operation's packet settles it (settleAll): the
// result moves from opState into the exported fields, and the Overlapped
// is ready again when the Get returns (SPEC S42).

import (
	"context"
	"net"
	"sync/atomic"
)

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

// The states of an Overlapped.
const (
	ovReady    = iota // no operation; the caller owns the Overlapped, which may start one
	ovPending         // started, not yet completed
	ovDone            // completed: the result waits in res for the dequeue
	ovSettling        // a Get is copying the result out
)

type opKind uint8

const (
	opRead opKind = iota
	opWrite
	opReadAt
	opWriteAt
	opAccept
	opReadFrom
	opWriteTo
	opFunc
)

var opNames = [...]string{"Read", "Write", "ReadAt", "WriteAt", "Accept", "ReadFrom", "WriteTo", "Call"}

// opState is the part of an Overlapped that belongs to the library while an
// operation is pending. It is written by the call that starts the
// operation before the operation is handed over, and then only by the
// goroutine that runs it, or under Handle.mu.
type opState struct {
	state atomic.Uint32 // ovReady, ovPending, ovDone, ovSettling
	h     atomic.Value  // *Handle: the handle while pending; read by Cancel of any handle

	op      opKind
	lane    int8
	buf     []byte
	to      net.Addr           // WriteTo's destination
	fn      Func               // Call's or Do's function
	cancel  context.CancelFunc // ends fn's context; nil for other operations
	next    *Overlapped        // a lane's queue, or the handle's unordered list; under Handle.mu
	prev    *Overlapped        // the unordered list; under Handle.mu
	aborted bool               // Cancel or Close reached it; under Handle.mu
	written int                // the part of a Write that writeNow wrote

	// The result, kept here from the completion until the dequeue.
	n    int
	err  error
	addr net.Addr
	conn net.Conn
}

// handle returns the handle ov's operation is pending on, or nil. (The
// field is an atomic.Value because atomic.Pointer[Handle] would close a
// cycle of types through a generic type, which Go does not accept.)
func (o *opState) handle() *Handle {
	h, _ := o.h.Load().(*Handle)
	return h
}

// drop forgets a completed operation's result that nobody will see: a
// connection that an Accept made is closed, and the Overlapped becomes
// ready.
func (o *opState) drop() {
	if o.conn != nil {
		o.conn.Close()
	}
	o.reset()
}

// settle copies a completed operation's result into ov's exported fields
// and makes ov ready. It runs in the goroutine that dequeues the packet,
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
	o.state.Store(ovReady)
	return true
}

// discard drops a completed operation's result, for a packet that Close
// takes off the queue: the Overlapped becomes ready, and a connection that
// an Accept made, which nobody will see, is closed.
func (ov *Overlapped) discard() {
	if ov.o.state.Load() != ovDone || !ov.o.state.CompareAndSwap(ovDone, ovSettling) {
		return
	}
	ov.o.drop()
}

// reset forgets an operation that did not start, or whose completion was
// dropped, and makes the Overlapped ready.
func (o *opState) reset() {
	o.clearArgs()
	o.n, o.err, o.addr, o.conn = 0, nil, nil, nil
	o.h.Store((*Handle)(nil))
	o.state.Store(ovReady)
}

// clearArgs drops what the operation was started with: its buffer, its
// destination, its function and the function's context, which it ends.
func (o *opState) clearArgs() {
	if o.cancel != nil {
		o.cancel()
	}
	o.buf, o.to, o.fn, o.cancel = nil, nil, nil, nil
}
