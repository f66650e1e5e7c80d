package iocp

// Handles: the operations of an associated source, their start and
// cancellation, the count of pending operations, and Close. The lanes
// (lane.go) run the operations and complete them.
//
// Invariants, all under Handle.mu:
//   - An Overlapped is pending from its start (the CAS of its state from
//     ovReady to ovPending) until its completion is handed to the port; in
//     that time ov.h points to the handle, and the Overlapped is in exactly
//     one place: a lane's queue (not started), a lane's cur (running), or
//     the handle's list of running unordered operations (those of no
//     lane, laneNone).
//   - A lane has a goroutine (active) whenever its queue is not empty or
//     cur is set; only that goroutine sets cur.
//   - dirty means a deadline was set on the source to interrupt a lane's
//     cur; the lane's goroutine clears the deadline before it starts the
//     next operation, so that an interruption meant for one operation
//     never reaches the next.
//   - closed is set once, by Close; then the queues are empty and no
//     operation starts.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// Errors of associated sources and their operations. Operations that fail
// before they start return them at once and queue no packet (SPEC S43);
// ErrAborted arrives in packets.
var (
	// ErrAborted matches, with errors.Is, the error of an operation ended
	// by Cancel, CancelAll, Handle.Close or Port.Close before it finished.
	ErrAborted = errors.New("iocp: operation aborted")

	// ErrNotPending is returned by Cancel when the Overlapped has no
	// operation pending on the handle, and by CancelAll when the handle
	// has none.
	ErrNotPending = errors.New("iocp: no pending operation")

	// ErrPending is returned by an operation given an Overlapped whose
	// previous operation has not been dequeued yet. The pending operation
	// is not disturbed.
	ErrPending = errors.New("iocp: Overlapped already pending")

	// ErrAssociated is returned by Associate for a source that is
	// associated already, with this port or another.
	ErrAssociated = errors.New("iocp: source already associated")

	// ErrHandleClosed is returned by the operations of a closed Handle.
	ErrHandleClosed = errors.New("iocp: handle closed")

	// ErrInvalid is matched by the errors of operations given a bad
	// argument: a nil Overlapped, an empty buffer, a negative offset, a
	// nil address or function.
	ErrInvalid = errors.New("iocp: invalid argument")
)

var (
	errNilOverlapped = fmt.Errorf("%w: nil *Overlapped", ErrInvalid)
	errEmptyBuffer   = fmt.Errorf("%w: empty buffer", ErrInvalid)
	errNegOffset     = fmt.Errorf("%w: negative offset", ErrInvalid)
	errNilAddr       = fmt.Errorf("%w: nil address", ErrInvalid)
	errNilFunc       = fmt.Errorf("%w: nil function", ErrInvalid)
)

// A Handle is a source associated with a port: the operations started on
// it complete on the port as packets that carry its key. Associate makes
// one.
//
// A Handle owns its source: Close closes it, and while it is associated
// the source's deadlines belong to the handle, which uses them to cancel
// operations. Do not set them, and do not use the source directly while
// operations are pending on it.
//
// The zero Handle is not usable. All methods are safe for concurrent use.
type Handle struct {
	p        *Port
	key      any
	src      any
	callback Handler // Pool.Bind's; read-only
	id       any     // the source's identity in the association registry; nil if it has none

	// The source's interfaces, found once by Associate; read-only.
	r   io.Reader
	w   io.Writer
	ra  io.ReaderAt
	wa  io.WriterAt
	ln  net.Listener
	pc  net.PacketConn
	fn  Func
	raw *rawWriter // for a socket: see writeNow; nil for other sources
	// interrupt[lane] makes the lane's running operation return at once
	// (set a deadline in the past), or, called with false, undoes that;
	// nil when the source cannot be interrupted.
	interrupt [2]func(now bool) error

	mu        sync.Mutex
	closed    bool        // guarded by mu
	lanes     [2]lane     // guarded by mu
	unordered *Overlapped // running operations of no lane (laneNone); guarded by mu
}

// Key returns the handle's completion key.
func (h *Handle) Key() any { return h.key }

// Source returns the associated source.
func (h *Handle) Source() any { return h.src }

// String describes the handle by its source's type and its key, or, for a
// handle that Pool.Bind made (whose key is the handle itself), by its
// source's type alone: "iocp.Handle(*net.TCPConn, key 7)".
func (h *Handle) String() string {
	if h.callback != nil {
		return fmt.Sprintf("iocp.Handle(%T, bound)", h.src)
	}
	return fmt.Sprintf("iocp.Handle(%T, key %v)", h.src, h.key)
}

func (h *Handle) unsupported(op opKind) error {
	return fmt.Errorf("iocp: %s on a %T: %w", opNames[op], h.src, errors.ErrUnsupported)
}

// Read starts reading into buf from a source that is an io.Reader. Its
// packet's Bytes is what Read returned, and Err its error (io.EOF at the
// end of a stream). The reads of a handle, with its Accepts and ReadFroms,
// run one at a time in the order they were started.
//
// Like every operation, Read returns only the errors that keep it from
// starting (SPEC S43); then no packet comes. Once it returns nil, buf and
// ov belong to the operation until its packet is dequeued, which may
// happen before Read returns (S46).
func (h *Handle) Read(ov *Overlapped, buf []byte) error {
	return h.startBuffered(h.r != nil, ov, opRead, laneRead, buf)
}

// Write starts writing buf to a source that is an io.Writer. The writes of
// a handle, with its WriteTos, run one at a time in the order they were
// started. See Read for what the caller hands over.
func (h *Handle) Write(ov *Overlapped, buf []byte) error {
	return h.startBuffered(h.w != nil, ov, opWrite, laneWrite, buf)
}

// ReadAt starts reading into buf at ov.Offset from a source that is an
// io.ReaderAt. Positional operations do not wait for one another: each
// runs at once. See Read for what the caller hands over.
func (h *Handle) ReadAt(ov *Overlapped, buf []byte) error {
	return h.startBuffered(h.ra != nil, ov, opReadAt, laneNone, buf)
}

// WriteAt starts writing buf at ov.Offset to a source that is an
// io.WriterAt. Positional operations do not wait for one another: each
// runs at once. See Read for what the caller hands over.
func (h *Handle) WriteAt(ov *Overlapped, buf []byte) error {
	return h.startBuffered(h.wa != nil, ov, opWriteAt, laneNone, buf)
}

// startBuffered starts op with buf, if the source has the operation (has),
// buf is not empty and, for a positional operation (ln == laneNone), the
// offset is not negative.
func (h *Handle) startBuffered(has bool, ov *Overlapped, op opKind, ln int, buf []byte) error {
	switch {
	case !has:
		return h.unsupported(op)
	case len(buf) == 0:
		return errEmptyBuffer
	case ln == laneNone && ov != nil && ov.Offset < 0:
		return errNegOffset
	}
	return h.start(ov, op, ln, buf, nil, nil)
}

// Accept starts accepting a connection on a net.Listener. When its packet
// is dequeued, ov.Conn is the connection, which the caller owns (and may
// associate). It runs in the read lane. See Read for what the caller hands
// over.
func (h *Handle) Accept(ov *Overlapped) error {
	if h.ln == nil {
		return h.unsupported(opAccept)
	}
	return h.start(ov, opAccept, laneRead, nil, nil, nil)
}

// ReadFrom starts reading a packet into buf from a net.PacketConn. When its
// packet is dequeued, ov.Addr is the sender's address. It runs in the read
// lane. See Read for what the caller hands over.
func (h *Handle) ReadFrom(ov *Overlapped, buf []byte) error {
	return h.startBuffered(h.pc != nil, ov, opReadFrom, laneRead, buf)
}

// WriteTo starts writing buf to addr on a net.PacketConn. It runs in the
// write lane. See Read for what the caller hands over.
func (h *Handle) WriteTo(ov *Overlapped, buf []byte, addr net.Addr) error {
	if h.pc == nil {
		return h.unsupported(opWriteTo)
	}
	if len(buf) == 0 {
		return errEmptyBuffer
	}
	if addr == nil {
		return errNilAddr
	}
	return h.start(ov, opWriteTo, laneWrite, buf, addr, nil)
}

// Call starts the Func the handle was associated with, on ov. It runs at
// once, on its own goroutine, whatever else is pending.
func (h *Handle) Call(ov *Overlapped) error {
	if h.fn == nil {
		return h.unsupported(opFunc)
	}
	return h.start(ov, opFunc, laneNone, nil, nil, h.fn)
}

// Do starts fn as an operation of the handle: it runs at once, on its own
// goroutine, and completes with a packet that carries the handle's key,
// what fn returned and ov. Cancel ends fn's context.
func (h *Handle) Do(ov *Overlapped, fn Func) error {
	if fn == nil {
		return errNilFunc
	}
	return h.start(ov, opFunc, laneNone, nil, nil, fn)
}

// testHookStarted, if not nil, runs at the end of every operation's start,
// after the operation has been handed over and before the call returns.
// Only tests set it.
var testHookStarted func()

// start checks ov, fills in its operation and hands it over.
func (h *Handle) start(ov *Overlapped, op opKind, ln int, buf []byte, to net.Addr, fn Func) error {
	if ov == nil {
		return errNilOverlapped
	}
	o := &ov.o
	// Takes the Overlapped: of two starts on it, one wins. The operation's
	// fields, written next, reach its goroutine through h.mu, or through
	// the go statement that starts that goroutine.
	if !o.state.CompareAndSwap(ovReady, ovPending) {
		return ErrPending
	}
	o.op, o.lane, o.buf, o.to, o.fn = op, int8(ln), buf, to, fn
	o.aborted, o.written = false, 0
	var ctx context.Context
	if fn != nil {
		ctx, o.cancel = context.WithCancel(context.Background())
	}

	h.mu.Lock()
	var err error
	// A draining port refuses new Accepts only: the work of packets it
	// took before goes on (see Port.Shutdown). Under h.mu, so that the
	// drain's CancelAll of a listener either finds this Accept or comes
	// before the check.
	switch g := h.p.gate.Load(); {
	case g&closedBit != 0, op == opAccept && g&drainingBit != 0, h.p.sealed.Load():
		err = ErrClosed
	case h.closed:
		err = ErrHandleClosed
	}
	if err != nil {
		h.mu.Unlock()
		o.reset()
		return err
	}
	h.p.ops.Add(opsDelta(o.lane)) // before the operation can complete
	o.h.Store(h)
	h.handOver(ov, ctx) // unlocks h.mu
	// ov belongs to the operation now: it may even have completed and been
	// dequeued (S46). Touch nothing of it.
	if testHookStarted != nil {
		testHookStarted()
	}
	return nil
}

// The pending-operation count: start adds opsDelta to Port.ops before
// the operation can complete, and complete takes it off after the post of
// its packet; Shutdown's drain (drain.go) reads it.

// opsOutbound is the part of a pending operation's count in Port.ops that
// says it completes by itself.
const opsOutbound = 1 << 32

// opsDelta is what an operation in lane ln adds to Port.ops while it is
// pending: reads, accepts and ReadFroms wait on a peer; the rest complete
// by themselves.
func opsDelta(ln int8) uint64 {
	if ln == laneRead {
		return 1
	}
	return 1 + opsOutbound
}

// handOver gives the started operation ov to the goroutine that will run
// it, or runs a socket Write at once (writeNow). h.mu is held when it is
// called and unlocked on return.
func (h *Handle) handOver(ov *Overlapped, ctx context.Context) {
	o := &ov.o
	if o.lane == laneNone {
		h.pushUnordered(ov)
		go h.runUnordered(ov, ctx)
		h.mu.Unlock()
		return
	}
	l := &h.lanes[o.lane]
	switch {
	case l.active:
		l.push(ov)
	case o.op == opWrite && h.raw != nil:
		h.writeNow(ov)
		return
	default:
		l.push(ov)
		l.active = true
		go h.runLane(int(o.lane), nil)
	}
	h.mu.Unlock()
}

// Cancel cancels the operation pending on ov (CancelIoEx with an
// OVERLAPPED). Its packet still comes, exactly once (SPEC S44): with its
// normal result if it finished first, otherwise with an error that matches
// ErrAborted. An operation that has not started is aborted at once; its
// packet may then come before those of operations started earlier. A
// running one is interrupted through its source: a deadline for net
// sources and pipes, its context for a Func. A source that cannot be
// interrupted (a regular file, a plain io.Reader, a Func that ignores its
// context) finishes the operation, whose packet then carries its normal
// result.
//
// Cancel returns ErrNotPending if ov has no operation pending on h.
func (h *Handle) Cancel(ov *Overlapped) error {
	if ov == nil {
		return errNilOverlapped
	}
	if ov.o.handle() != h {
		return ErrNotPending
	}
	h.mu.Lock()
	if ov.o.handle() != h { // finished meanwhile
		h.mu.Unlock()
		return ErrNotPending
	}
	dropped := h.cancelLocked(ov)
	h.mu.Unlock()
	if dropped {
		h.complete(ov, 0, ErrAborted, false)
	}
	return nil
}

// CancelAll cancels every operation pending on h, as Cancel does each
// (CancelIo). It returns ErrNotPending if there was none.
func (h *Handle) CancelAll() error {
	h.mu.Lock()
	dropped := h.cancelAllLocked()
	running := h.unordered != nil || h.lanes[0].cur != nil || h.lanes[1].cur != nil
	h.mu.Unlock()
	for _, ov := range dropped {
		h.complete(ov, 0, ErrAborted, false)
	}
	if len(dropped) == 0 && !running {
		return ErrNotPending
	}
	return nil
}

// cancelLocked cancels ov, pending on h, and reports whether it had not
// started: then it is off the handle, and the caller completes it.
func (h *Handle) cancelLocked(ov *Overlapped) bool {
	o := &ov.o
	if o.lane != laneNone {
		l := &h.lanes[o.lane]
		if l.remove(ov) {
			h.finish(ov)
			return true
		}
		// Running: interrupt it, and have the lane undo that before its
		// next operation.
		if !o.aborted && h.interrupt[o.lane] != nil {
			l.dirty = true
			h.interrupt[o.lane](true)
		}
	} else if o.cancel != nil {
		o.cancel()
	}
	o.aborted = true
	return false
}

// cancelAllLocked cancels everything pending on h and returns the
// operations that had not started, for the caller to complete.
func (h *Handle) cancelAllLocked() []*Overlapped {
	var dropped []*Overlapped
	for i := range h.lanes {
		l := &h.lanes[i]
		for ov := l.pop(); ov != nil; ov = l.pop() {
			h.finish(ov)
			dropped = append(dropped, ov)
		}
		if l.cur != nil {
			h.cancelLocked(l.cur)
		}
	}
	for ov := h.unordered; ov != nil; ov = ov.o.next {
		h.cancelLocked(ov)
	}
	return dropped
}

// Close closes the handle (CloseHandle on a file): it aborts every pending
// operation as CancelAll does, each still completing with one packet,
// closes the source if it is an io.Closer, which also interrupts the
// operations that a deadline could not, and ends the association, so that
// the source could be associated again. It returns the source's Close
// error. Operations that a closed source cannot interrupt run to their
// end; Close does not wait for them. Later operations return
// ErrHandleClosed; a second Close returns ErrHandleClosed too.
func (h *Handle) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return ErrHandleClosed
	}
	h.closed = true
	dropped := h.cancelAllLocked()
	h.mu.Unlock()

	var err error
	// Asked for here, not kept in the Handle: the size of a Handle with no
	// operation pending is what a server holds per connection
	// (TestHandleCostWithoutOperations in examples/echo), and another interface field would grow it.
	if c, ok := h.src.(io.Closer); ok {
		err = c.Close()
	}
	for _, ov := range dropped {
		h.complete(ov, 0, ErrAborted, false)
	}
	if h.id != nil {
		sources.Lock()
		if sources.m[h.id] == h {
			delete(sources.m, h.id)
		}
		sources.Unlock()
	}
	h.p.hmu.Lock()
	delete(h.p.handles, h)
	h.p.hmu.Unlock()
	return err
}

// A Func is a blocking operation run as an overlapped one, by Handle.Do, or
// by Handle.Call on a handle associated with it. It returns the bytes
// transferred, or any count it likes, and its error. ctx ends when the
// operation is cancelled: a Func that watches ctx can be interrupted, one
// that does not runs to its end. ov is the operation's Overlapped, with
// the caller's Value and Offset.
type Func func(ctx context.Context, ov *Overlapped) (int, error)
