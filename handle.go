package iocp

// Associated sources and overlapped operations.
//
// A Handle runs each operation on a goroutine of its own: Go has no
// portable way to wait for I/O without one. Stream operations go through
// one of two lanes, read (Read, ReadFrom, Accept) and write (Write,
// WriteTo); a lane runs its operations one at a time, in the order they
// were started, on one goroutine that exists while the lane has work and
// exits when it is empty. Positional operations (ReadAt, WriteAt) and
// functions (Call, Do) run at once, each on its own goroutine. An idle
// handle therefore holds no goroutine.
//
// Invariants, all under Handle.mu:
//   - An Overlapped is pending from its start (the CAS of its state from
//     ovIdle to ovPending) until its completion is handed to the port; in
//     that time ov.h points to the handle, and the Overlapped is in exactly
//     one place: a lane's queue (not started), a lane's cur (running), or
//     the handle's list of running free operations.
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
	"maps"
	"net"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
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

// A Func is a blocking operation run as an overlapped one, by Handle.Do, or
// by Handle.Call on a handle associated with it. It returns the bytes
// transferred, or any count it likes, and its error. ctx ends when the
// operation is cancelled: a Func that watches ctx can be interrupted, one
// that does not runs to its end. ov is the operation's Overlapped, with
// the caller's Value and Offset.
type Func func(ctx context.Context, ov *Overlapped) (int, error)

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

const (
	laneRead  = 0
	laneWrite = 1
	laneNone  = -1 // runs at once on its own goroutine
)

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

// settle copies a completed operation's result into ov's exported fields
// and makes ov idle. It runs in the goroutine that dequeues the packet,
// whose Get returns right after, so the caller reads the fields with no
// race (SPEC S42). A packet posted with an Overlapped that is not done
// leaves it alone.
func (ov *Overlapped) settle() {
	// The CAS, rather than a load, keeps two packets that carry one
	// Overlapped (a misuse of Post) from settling it at once.
	if ov.o.state.Load() != ovDone || !ov.o.state.CompareAndSwap(ovDone, ovSettling) {
		return
	}
	// The result was written before the post that queued this packet, and
	// that post is synchronized before the Get running this code.
	o := &ov.o
	ov.Bytes, ov.Err, ov.Addr, ov.Conn = o.n, o.err, o.addr, o.conn
	o.n, o.err, o.addr, o.conn = 0, nil, nil, nil
	// Hands the Overlapped back: the CAS in the next start synchronizes
	// with this store, so that operation's writes come after this copy.
	o.state.Store(ovIdle)
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

// drop forgets a completed operation's result that nobody will see: a
// connection that an Accept made is closed, and the Overlapped becomes
// idle.
func (o *opState) drop() {
	if o.conn != nil {
		o.conn.Close()
	}
	o.reset()
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

	mu     sync.Mutex
	closed bool        // guarded by mu
	lanes  [2]lane     // guarded by mu
	free   *Overlapped // running free operations; guarded by mu
}

// lane is one direction of a stream. All fields are guarded by Handle.mu.
type lane struct {
	head, tail *Overlapped // operations not started, oldest first
	cur        *Overlapped // the running operation
	active     bool        // a goroutine runs the lane
	dirty      bool        // interrupt was called for cur; undo before the next
}

// aLongTimeAgo is a deadline that has passed: setting it makes a pending
// call on a net source return at once.
var aLongTimeAgo = time.Unix(1, 0)

// sources registers every associated source, so that a source belongs to
// one port at most (SPEC S41).
var sources struct {
	sync.Mutex
	m map[any]*Handle
}

// funcID identifies a func value: Go funcs are not comparable, but a func
// value is a pointer to its closure, which is what makes two func values
// the same function.
type funcID struct{ p unsafe.Pointer }

// sourceID returns the key under which src is registered, or nil for a
// value that has no identity: one that is not comparable (a struct holding
// a slice, say), of which every copy is a different source.
func sourceID(src any) any {
	if f := asFunc(src); f != nil {
		return funcID{*(*unsafe.Pointer)(unsafe.Pointer(&f))}
	}
	if !reflect.TypeOf(src).Comparable() {
		return nil
	}
	return src
}

// Associate associates source with the port: the operations started on the
// returned Handle complete on the port, each with one packet that carries
// key (SPEC S40-S42). It is CreateIoCompletionPort with a file handle.
//
// source may be a net.Conn, net.Listener, net.PacketConn, *os.File, any
// io.Reader, io.Writer, io.ReaderAt or io.WriterAt, or a Func. The
// operations a Handle allows are the ones its source's type has. A source
// is associated with one port at most, until its Handle is closed: a
// second Associate returns ErrAssociated. A nil source, or one of another
// type, is an error.
//
// Associate returns ErrClosed on a closed or draining port.
func (p *Port) Associate(source any, key any) (*Handle, error) {
	return p.associate(source, key, nil)
}

// associate is Associate; with a callback (Pool.Bind) the handle is its
// own key.
func (p *Port) associate(source any, key any, callback Handler) (*Handle, error) {
	if source == nil {
		return nil, fmt.Errorf("%w: nil source", ErrInvalid)
	}
	if v := reflect.ValueOf(source); isNilable(v.Kind()) && v.IsNil() {
		return nil, fmt.Errorf("%w: nil %T source", ErrInvalid, source)
	}
	h := &Handle{p: p, key: key, src: source, callback: callback}
	if callback != nil {
		h.key = h
	}
	if !h.bind(source) {
		return nil, fmt.Errorf("iocp: cannot associate a %T: %w", source, errors.ErrUnsupported)
	}
	h.id = sourceID(source)
	if err := p.register(h); err != nil {
		return nil, err
	}
	h.setInterrupts(source)
	return h, nil
}

// register enters h in the registry of sources and in p's handles, or
// returns why it cannot be.
func (p *Port) register(h *Handle) error {
	sources.Lock()
	defer sources.Unlock()
	if h.id != nil && sources.m[h.id] != nil {
		return fmt.Errorf("%w: %T", ErrAssociated, h.src)
	}
	p.hmu.Lock()
	if refusing(p.gate.Load()) {
		p.hmu.Unlock()
		return ErrClosed
	}
	if p.handles == nil {
		p.handles = make(map[*Handle]struct{})
		p.associated.Store(true)
	}
	p.handles[h] = struct{}{}
	p.hmu.Unlock()
	if h.id != nil {
		if sources.m == nil {
			sources.m = make(map[any]*Handle)
		}
		sources.m[h.id] = h
	}
	return nil
}

// asFunc returns src as a Func if it is one, of the named type or of the
// unnamed func type a literal has, and nil otherwise.
func asFunc(src any) Func {
	switch f := src.(type) {
	case Func:
		return f
	case func(context.Context, *Overlapped) (int, error):
		return f
	}
	return nil
}

func isNilable(k reflect.Kind) bool {
	switch k {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan, reflect.Interface:
		return true
	}
	return false
}

// deadliner is what *os.File, net.Conn and net.PacketConn have.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// bind records the interfaces src has, and reports whether it has one
// that makes an operation.
func (h *Handle) bind(src any) bool {
	h.fn = asFunc(src)
	h.r, _ = src.(io.Reader)
	h.w, _ = src.(io.Writer)
	h.ra, _ = src.(io.ReaderAt)
	h.wa, _ = src.(io.WriterAt)
	h.ln, _ = src.(net.Listener)
	h.pc, _ = src.(net.PacketConn)
	h.raw = newRawWriter(src)
	return h.fn != nil || h.r != nil || h.w != nil || h.ra != nil || h.wa != nil || h.ln != nil || h.pc != nil
}

// setInterrupts finds how operations on src can be interrupted: by the
// deadlines of net sources and of files that can be polled. A source
// with the methods may still refuse deadlines (a regular file; os.Pipe's
// ends on Windows, which cannot be polled): clearing them tells, and such
// a source cannot be interrupted. It runs once the source is registered
// to h, so that it never touches the deadlines of a source that another
// handle owns.
func (h *Handle) setInterrupts(src any) {
	if d, ok := src.(deadliner); ok {
		if d.SetReadDeadline(time.Time{}) == nil {
			h.interrupt[laneRead] = func(now bool) error { return d.SetReadDeadline(deadline(now)) }
		}
		if d.SetWriteDeadline(time.Time{}) == nil {
			h.interrupt[laneWrite] = func(now bool) error { return d.SetWriteDeadline(deadline(now)) }
		}
	} else if d, ok := src.(interface{ SetDeadline(time.Time) error }); ok && h.ln != nil {
		// A listener has one deadline, for Accept, in the read lane.
		if d.SetDeadline(time.Time{}) == nil {
			h.interrupt[laneRead] = func(now bool) error { return d.SetDeadline(deadline(now)) }
		}
	}
}

func deadline(now bool) time.Time {
	if now {
		return aLongTimeAgo
	}
	return time.Time{}
}

// Key returns the handle's completion key.
func (h *Handle) Key() any { return h.key }

// Source returns the associated source.
func (h *Handle) Source() any { return h.src }

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
	if h.ra == nil {
		return h.unsupported(opReadAt)
	}
	if err := positional(ov, buf); err != nil {
		return err
	}
	return h.start(ov, opReadAt, laneNone, buf, nil, nil)
}

// WriteAt starts writing buf at ov.Offset to a source that is an
// io.WriterAt. Positional operations do not wait for one another: each
// runs at once. See Read for what the caller hands over.
func (h *Handle) WriteAt(ov *Overlapped, buf []byte) error {
	if h.wa == nil {
		return h.unsupported(opWriteAt)
	}
	if err := positional(ov, buf); err != nil {
		return err
	}
	return h.start(ov, opWriteAt, laneNone, buf, nil, nil)
}

// startBuffered starts op with buf, if the source has the operation (has)
// and buf is not empty.
func (h *Handle) startBuffered(has bool, ov *Overlapped, op opKind, ln int, buf []byte) error {
	switch {
	case !has:
		return h.unsupported(op)
	case len(buf) == 0:
		return errEmptyBuffer
	}
	return h.start(ov, op, ln, buf, nil, nil)
}

func positional(ov *Overlapped, buf []byte) error {
	switch {
	case len(buf) == 0:
		return errEmptyBuffer
	case ov != nil && ov.Offset < 0:
		return errNegOffset
	}
	return nil
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
	if !o.state.CompareAndSwap(ovIdle, ovPending) {
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
	switch {
	case refusing(h.p.gate.Load()):
		err = ErrClosed
	case h.closed:
		err = ErrHandleClosed
	}
	if err != nil {
		h.mu.Unlock()
		o.reset()
		return err
	}
	o.h.Store(h)
	h.handOver(ov, ctx) // unlocks h.mu
	// ov belongs to the operation now: it may even have completed and been
	// dequeued (S46). Touch nothing of it.
	if testHookStarted != nil {
		testHookStarted()
	}
	return nil
}

// handOver gives the started operation ov to the goroutine that will run
// it, or runs a socket Write at once (writeNow). h.mu is held on entry and
// released on return.
func (h *Handle) handOver(ov *Overlapped, ctx context.Context) {
	o := &ov.o
	if o.lane == laneNone {
		h.pushFree(ov)
		go h.runFree(ov, ctx)
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

func (l *lane) push(ov *Overlapped) {
	ov.o.next = nil
	if l.tail == nil {
		l.head = ov
	} else {
		l.tail.o.next = ov
	}
	l.tail = ov
}

func (l *lane) pop() *Overlapped {
	ov := l.head
	if ov != nil {
		l.head = ov.o.next
		if l.head == nil {
			l.tail = nil
		}
		ov.o.next = nil
	}
	return ov
}

// remove takes ov out of the queue and reports whether it was there.
func (l *lane) remove(ov *Overlapped) bool {
	var prev *Overlapped
	for x := l.head; x != nil; prev, x = x, x.o.next {
		if x != ov {
			continue
		}
		if prev == nil {
			l.head = x.o.next
		} else {
			prev.o.next = x.o.next
		}
		if l.tail == x {
			l.tail = prev
		}
		x.o.next = nil
		return true
	}
	return false
}

func (h *Handle) pushFree(ov *Overlapped) {
	ov.o.prev, ov.o.next = nil, h.free
	if h.free != nil {
		h.free.o.prev = ov
	}
	h.free = ov
}

func (h *Handle) unlinkFree(ov *Overlapped) {
	if ov.o.prev == nil {
		h.free = ov.o.next
	} else {
		ov.o.prev.o.next = ov.o.next
	}
	if ov.o.next != nil {
		ov.o.next.o.prev = ov.o.prev
	}
	ov.o.prev, ov.o.next = nil, nil
}

// runLane runs lane ln's operations in order until its queue is empty
// and stays so across one yield. If first is not nil, it is the lane's
// cur already and runs first.
func (h *Handle) runLane(ln int, first *Overlapped) {
	l := &h.lanes[ln]
	h.mu.Lock()
	lingered := false
	for ov := first; ; ov = nil {
		if ov == nil {
			if ov = l.pop(); ov == nil {
				// Before exiting, give the P away once: a worker that this
				// lane's completion just released often starts the handle's
				// next operation at once (a Read after a Write, say), and
				// finds the lane still running, which saves a goroutine.
				if !lingered {
					lingered = true
					h.mu.Unlock()
					runtime.Gosched()
					h.mu.Lock()
					continue
				}
				l.active = false
				h.mu.Unlock()
				return
			}
			lingered = false
			h.undoInterrupt(ln)
			l.cur = ov
		}
		h.mu.Unlock()

		n, err := h.perform(ov, nil)

		h.mu.Lock()
		l.cur = nil
		aborted := h.finish(ov)
		h.mu.Unlock()
		h.complete(ov, n, err, aborted)
		h.mu.Lock()
	}
}

// undoInterrupt clears the deadline that interrupted lane ln's last
// operation, if one did, before the next starts. h.mu is held.
func (h *Handle) undoInterrupt(ln int) {
	if l := &h.lanes[ln]; l.dirty {
		l.dirty = false
		h.interrupt[ln](false) // a closed source says no; it matters not
	}
}

// writeNow runs a Write on an idle write lane in the calling goroutine,
// as far as the socket takes it without waiting: a socket whose buffer
// has room takes a short write whole, and the operation then completes
// with no goroutine started. What the socket does not take is left to the
// lane's goroutine. Either way the packet is queued as for any operation.
// h.mu is held on entry and released on return.
func (h *Handle) writeNow(ov *Overlapped) {
	l := &h.lanes[laneWrite]
	l.active = true
	l.cur = ov
	h.undoInterrupt(laneWrite)
	h.mu.Unlock()

	o := &ov.o
	o.written = h.raw.try(o.buf)
	if o.written < len(o.buf) {
		go h.runLane(laneWrite, ov)
		return
	}
	h.mu.Lock()
	l.cur = nil
	aborted := h.finish(ov)
	h.mu.Unlock()
	// The lane stays active until the completion is queued, so that a
	// Write started meanwhile completes after this one.
	h.complete(ov, len(o.buf), nil, aborted)
	h.mu.Lock()
	if l.head != nil {
		go h.runLane(laneWrite, nil)
	} else {
		l.active = false
	}
	h.mu.Unlock()
}

// runFree runs one free operation.
func (h *Handle) runFree(ov *Overlapped, ctx context.Context) {
	n, err := h.perform(ov, ctx)
	h.mu.Lock()
	h.unlinkFree(ov)
	aborted := h.finish(ov)
	h.mu.Unlock()
	h.complete(ov, n, err, aborted)
}

// finish ends ov's time on the handle: from here Cancel no longer finds
// it. It reports whether a cancel reached it while it ran. h.mu is held.
func (h *Handle) finish(ov *Overlapped) bool {
	ov.o.h.Store((*Handle)(nil))
	return ov.o.aborted
}

// perform runs ov's operation on the source and returns its result; an
// Accept's connection and a ReadFrom's address go straight into ov.
func (h *Handle) perform(ov *Overlapped, ctx context.Context) (int, error) {
	o := &ov.o
	switch o.op {
	case opRead:
		return h.r.Read(o.buf)
	case opWrite:
		n, err := h.w.Write(o.buf[o.written:]) // writeNow may have written a part
		return o.written + n, err
	case opReadAt:
		return h.ra.ReadAt(o.buf, ov.Offset)
	case opWriteAt:
		return h.wa.WriteAt(o.buf, ov.Offset)
	case opAccept:
		c, err := h.ln.Accept()
		o.conn = c
		return 0, err
	case opReadFrom:
		n, addr, err := h.pc.ReadFrom(o.buf)
		o.addr = addr
		return n, err
	case opWriteTo:
		return h.pc.WriteTo(o.buf, o.to)
	default: // opFunc
		return o.fn(ctx, ov)
	}
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
	for wait := time.Duration(0); ; {
		switch h.p.post(&pkt, refuseCompletion) {
		case nil:
			return
		case ErrQueueFull:
			wait = min(max(2*wait, 50*time.Microsecond), 10*time.Millisecond)
			time.Sleep(wait)
			continue
		}
		// ErrClosed: nobody will dequeue it.
		o.drop()
		h.p.discarded.Add(1)
		return
	}
}

// abortError is the error of an operation that a cancel interrupted: it
// matches ErrAborted and unwraps to what the source returned.
type abortError struct{ cause error }

func (e *abortError) Error() string        { return "iocp: operation aborted: " + e.cause.Error() }
func (e *abortError) Unwrap() error        { return e.cause }
func (e *abortError) Is(target error) bool { return target == ErrAborted }

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
	running := h.free != nil || h.lanes[0].cur != nil || h.lanes[1].cur != nil
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
	for ov := h.free; ov != nil; ov = ov.o.next {
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
	// Asked for here, not kept in the Handle: 16 bytes more would put an
	// idle Handle in the next size class (280 bytes now, class 288).
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

// closeHandles closes every handle of a port that is closing. It reads the
// set under hmu: a concurrent Associate may be making it, and each Close
// takes hmu itself to leave it. A handle registered after the snapshot saw
// the closed bit first (register checks it under hmu) and was refused.
func (p *Port) closeHandles() {
	p.hmu.Lock()
	hs := slices.Collect(maps.Keys(p.handles))
	p.hmu.Unlock()
	for _, h := range hs {
		h.Close()
	}
}
