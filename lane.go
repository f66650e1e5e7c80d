package iocp

// Lanes: the goroutines that run a Handle's operations, and complete,
// which hands an operation's completion to the port.
//
// A Handle runs each operation on a goroutine of its own: Go has no
// portable way to wait for I/O without one. Stream operations go through
// one of two lanes, read (Read, ReadFrom, Accept) and write (Write,
// WriteTo); a lane runs its operations one at a time, in the order they
// were started, on one goroutine that exists while the lane has work and
// exits when it is empty. Positional operations (ReadAt, WriteAt) and
// functions (Call, Do) run at once, each on its own goroutine. A handle
// with no operation pending therefore holds no goroutine.

import (
	"context"
	"runtime"
)

const (
	laneRead  = 0
	laneWrite = 1
	laneNone  = -1 // unordered: runs at once on its own goroutine
)

// lane is one direction of a stream. All fields are guarded by Handle.mu.
type lane struct {
	head, tail *Overlapped // operations not started, oldest first
	cur        *Overlapped // the running operation
	active     bool        // a goroutine runs the lane
	dirty      bool        // interrupt was called for cur; undo before the next
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

// pushUnordered adds ov to the handle's running unordered operations.
func (h *Handle) pushUnordered(ov *Overlapped) {
	ov.o.prev, ov.o.next = nil, h.unordered
	if h.unordered != nil {
		h.unordered.o.prev = ov
	}
	h.unordered = ov
}

// unlinkUnordered takes ov off the handle's running unordered operations.
func (h *Handle) unlinkUnordered(ov *Overlapped) {
	if ov.o.prev == nil {
		h.unordered = ov.o.next
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

// writeNow runs a Write on an empty write lane in the calling goroutine,
// as far as the socket takes it without waiting: a socket whose buffer
// has room takes a short write whole, and the operation then completes
// with no goroutine started. What the socket does not take is left to the
// lane's goroutine. Either way the packet is queued as for any operation.
// h.mu is held when it is called and unlocked on return.
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

// runUnordered runs one unordered operation: one of no lane (laneNone),
// a positional operation or a function, which runs at once on its own
// goroutine.
func (h *Handle) runUnordered(ov *Overlapped, ctx context.Context) {
	n, err := h.perform(ov, ctx)
	h.mu.Lock()
	h.unlinkUnordered(ov)
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
	o.clearArgs()
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
