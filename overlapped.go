package iocp

// Overlapped operations: the library's half of an Overlapped, and the
// moves of its state.
//
// An Overlapped's state (opState.state) moves so, each move made by one
// function under the synchronization named:
//
//	from        to          by                          under
//	ovIdle      ovPending   Handle.start                the CAS itself: of two starts, one wins
//	ovPending   ovIdle      Handle.start, refused       the starting goroutine still owns it (reset)
//	ovPending   ovDone      Handle.complete             the goroutine that ran it, after Handle.finish under Handle.mu
//	ovDone      ovSettling  Overlapped.settle, discard  the CAS: of two packets carrying one Overlapped, one settles it
//	ovSettling  ovIdle      settle, drop                the dequeuing goroutine; the next start's CAS synchronizes with this store
//	ovDone      ovIdle      Handle.complete, refused    the completing goroutine: the port is closed and the result is dropped
//
// A Get that dequeues an operation's packet settles it (settleAll): the
// result moves from opState into the exported fields, and the Overlapped
// is idle again when the Get returns (SPEC S42).

import (
	"context"
	"net"
	"sync/atomic"
)

// The states of an Overlapped.
const (
	ovIdle     = iota // no operation; the caller owns the Overlapped
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
	state atomic.Uint32 // ovIdle, ovPending, ovDone, ovSettling
	h     atomic.Value  // *Handle: the handle while pending; read by Cancel of any handle

	op      opKind
	lane    int8
	buf     []byte
	to      net.Addr           // WriteTo's destination
	fn      Func               // Call's or Do's function
	cancel  context.CancelFunc // ends fn's context; nil for other operations
	next    *Overlapped        // a lane's queue, or the handle's free list; under Handle.mu
	prev    *Overlapped        // the free list; under Handle.mu
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
// idle.
func (o *opState) drop() {
	if o.conn != nil {
		o.conn.Close()
	}
	o.reset()
}

// reset forgets an operation that did not start, or whose completion was
// dropped, and makes the Overlapped idle.
func (o *opState) reset() {
	o.release()
	o.n, o.err, o.addr, o.conn = 0, nil, nil, nil
	o.h.Store((*Handle)(nil))
	o.state.Store(ovIdle)
}

// release drops what the operation held: its buffer, its destination,
// its function and the function's context.
func (o *opState) release() {
	if o.cancel != nil {
		o.cancel()
	}
	o.buf, o.to, o.fn, o.cancel = nil, nil, nil, nil
}
