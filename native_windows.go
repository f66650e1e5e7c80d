package iocp

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/windows"
)

// nativePort is the Windows backend: a kernel completion port (see
// kernelPort) and the bookkeeping the portable code asks of a backend
// (native.go).
//
// Every wait on it is alertable, and every thread that may wait is known
// (threads, from attach to detach): a wait ends on a packet, on its
// timeout, or when an APC is queued to its thread, which is how a context's
// end and Close reach a waiter whatever the kernel's concurrency value lets
// through. The handle is closed only once no call is using it (users), so
// that no call can wait on a handle number that Windows has reused.
type nativePort struct {
	k     *kernelPort
	limit int // WithQueueLimit, or 0

	// users counts the calls between their check of closed and their
	// return; closed is set once, by close. A call adds itself, then loads
	// closed; close stores closed, then interrupts every thread and waits
	// for users to reach zero. Both are sequentially consistent
	// (https://go.dev/ref/mem#atomic): either the call sees closed and
	// leaves, or close sees the call and waits for it, after having
	// interrupted its thread.
	users  atomic.Int64
	closed atomic.Bool

	// posting counts the posts between their check of sealed and their
	// return; sealed is set once, by seal, which then waits for posting
	// to reach zero: the same argument as for users and closed.
	posting atomic.Int64
	sealed  atomic.Bool

	mu      sync.Mutex
	threads map[*thread]struct{} // attached threads; guarded by mu
	files   map[*File]struct{}   // associated and not closed; guarded by mu
}

// thread is a native worker's OS thread, from attach to detach.
type thread struct {
	// id is GetCurrentThreadId, set by attach and cleared by detach on
	// the thread itself; current may load it from any goroutine.
	id atomic.Uint32
	h  windows.Handle // THREAD_SET_CONTEXT, for QueueUserAPC
	// interrupt is the AfterFunc of a Get's context: it queues an APC to
	// the thread, then sends on apcQueued. Both are made once, by the
	// first attach.
	interrupt func()
	apcQueued chan struct{}
	// closing is set by nativePort.interrupt, under the port's mu, before
	// it queues its APC: a get that the APC ends returns ErrClosed.
	closing atomic.Bool
}

var _ backend = (*nativePort)(nil)

func newNative(concurrency, queueLimit int) (*nativePort, error) {
	if err := getQueuedCompletionStatusEx.Find(); err != nil {
		return nil, fmt.Errorf("iocp: WithNative: %w", err)
	}
	if err := queueUserAPC.Find(); err != nil {
		return nil, fmt.Errorf("iocp: WithNative: %w", err)
	}
	k, err := newKernelPort(concurrency)
	if err != nil {
		return nil, err
	}
	return &nativePort{
		k:       k,
		limit:   queueLimit,
		threads: make(map[*thread]struct{}),
		files:   make(map[*File]struct{}),
	}, nil
}

func (n *nativePort) post(pkt *Packet) error {
	n.users.Add(1)
	defer n.users.Add(-1)
	n.posting.Add(1)
	defer n.posting.Add(-1)
	if n.closed.Load() || n.sealed.Load() {
		return ErrClosed
	}
	return n.k.post(pkt, n.limit)
}

func (n *nativePort) get(t *thread, ctx context.Context, dst []Packet, block bool) (int, error) {
	n.users.Add(1)
	defer n.users.Add(-1)
	if n.closed.Load() {
		return 0, ErrClosed
	}
	timeout := uint32(0)
	if block {
		timeout = windows.INFINITE
		if ctx.Done() != nil {
			// A context that can end reaches the wait by an APC, which
			// takes an AfterFunc, which allocates: look at the queue first.
			if got, err := n.k.get(dst, 0, false); got > 0 {
				return got, nil
			} else if err != errTimeout && err != nil {
				return 0, err
			}
			stop := context.AfterFunc(ctx, t.interrupt)
			defer t.stopInterrupt(stop)
		}
	}
	for {
		if d, ok := ctx.Deadline(); ok && block {
			timeout = millisUntil(d)
		}
		got, err := n.k.get(dst, timeout, block)
		if got > 0 {
			return got, nil
		}
		switch err {
		case errInterrupted:
			// An APC: close's, the context's or interrupt's.
			if t.closing.Load() {
				return 0, ErrClosed
			}
		case errTimeout:
			if !block {
				return 0, nil
			}
			// The kernel's clock may end a wait a little before Go's
			// says the deadline has passed: wait again for the rest.
		default:
			return 0, err
		}
		if n.closed.Load() {
			return 0, ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
}

// millisUntil returns the milliseconds from now to d, rounded up, as a
// finite kernel timeout.
func millisUntil(d time.Time) uint32 {
	ms := (time.Until(d) + time.Millisecond - 1) / time.Millisecond
	return uint32(min(max(ms, 0), windows.INFINITE-1))
}

// stopInterrupt undoes a Get's AfterFunc: if it ran, its APC is queued on
// this thread, and runs here (SleepEx) rather than ending a later wait.
func (t *thread) stopInterrupt(stop func() bool) {
	if !stop() {
		<-t.apcQueued
		windows.SleepEx(0, true)
	}
}

func (n *nativePort) attach(t *thread) {
	id := windows.GetCurrentThreadId()
	t.id.Store(id)
	t.closing.Store(false)
	h, err := windows.OpenThread(windows.THREAD_SET_CONTEXT, false, id)
	if err != nil {
		// A process may always open its own threads; nothing to recover.
		panic(fmt.Sprintf("iocp: OpenThread of the calling thread: %v", err))
	}
	t.h = h
	if t.apcQueued == nil {
		t.apcQueued = make(chan struct{}, 1)
		t.interrupt = func() {
			queueAPC(t)
			t.apcQueued <- struct{}{}
		}
	}
	// A thread that comes after close has interrupted the others needs
	// no APC: its get sees closed (see users).
	n.mu.Lock()
	n.threads[t] = struct{}{}
	n.mu.Unlock()
}

func (n *nativePort) current(t *thread) bool { return windows.GetCurrentThreadId() == t.id.Load() }

// interrupt queues an APC to t's thread if t is attached. The worker's
// state was set to stateClosing first; a t not attached yet sees that
// state after its attach, whose n.mu section orders the two.
func (n *nativePort) interrupt(t *thread) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.threads[t]; ok && t.h != 0 {
		t.closing.Store(true)
		queueAPC(t)
	}
}

func (n *nativePort) detach(t *thread) {
	n.mu.Lock()
	delete(n.threads, t)
	h := t.h // 0 if close has closed it
	t.id.Store(0)
	t.h = 0
	n.mu.Unlock()
	// The thread's association with a port ends when it waits on another
	// one: a wait of no time on a port that never has packets.
	if h, err := leavePort(); err == nil {
		var qty uint32
		var key, ov uintptr
		getQueuedCompletionStatus(h, &qty, &key, &ov, 0)
	}
	// Run what APCs close queued on it here, not in some later wait.
	windows.SleepEx(0, true)
	if h != 0 {
		windows.CloseHandle(h)
	}
}

// leavePort is the port a thread waits on to leave another: made once,
// for the life of the process.
var leavePort = sync.OnceValues(func() (windows.Handle, error) {
	return windows.CreateIoCompletionPort(windows.InvalidHandle, 0, 0, 1)
})

// seal refuses posts from here on, then waits out the posts that passed
// their check before (see posting).
func (n *nativePort) seal() {
	n.sealed.Store(true)
	awaitZero(&n.posting)
}

// awaitZero waits until *c is 0: the caller has set the flag that the
// calls *c counts check after counting themselves, so each is a few
// instructions from its end, or sees the flag and leaves.
func awaitZero(c *atomic.Int64) {
	for wait := time.Microsecond; c.Load() != 0; wait = min(2*wait, time.Millisecond) {
		time.Sleep(wait)
	}
}

// len counts the posted packets: the kernel knows its queue's depth but
// does not say, and a File's completion is known when it is dequeued.
func (n *nativePort) len() int { return n.k.packets.len() }

func (n *nativePort) close(drop func(*Packet)) int {
	n.mu.Lock()
	n.closed.Store(true)
	for t := range n.threads {
		queueAPC(t)
	}
	n.mu.Unlock()
	// Every call that saw the port open returns soon: the waits were
	// interrupted, and post and a wait of no time do not block.
	awaitZero(&n.users)
	// The Files' operations are cancelled, and their completions taken
	// here: the kernel may write into their OVERLAPPEDs and buffers until
	// it has queued them, so both stay pinned until then.
	n.mu.Lock()
	files := slices.Collect(maps.Keys(n.files))
	n.mu.Unlock()
	for _, f := range files {
		f.Close() // takes n.mu to leave the set
	}
	dropped := 0
	var buf [maxBatch]Packet
	for n.k.ops.inFlight() > 0 {
		got, err := n.k.get(buf[:], windows.INFINITE, false)
		if err != nil {
			break // the kernel's own failure: better leave them pinned than spin
		}
		for i := range buf[:got] {
			drop(&buf[i])
			buf[i] = Packet{}
		}
		dropped += got
	}
	n.k.close()
	// The threads still attached belong to workers that have not closed,
	// some perhaps never will: their handles are closed here. No APC can
	// be queued to them any more: close's were, and a context's is only
	// queued during a get, and there is none.
	n.mu.Lock()
	for t := range n.threads {
		windows.CloseHandle(t.h)
		t.h = 0
	}
	clear(n.threads)
	n.mu.Unlock()
	// The kernel dropped the posted packets still queued with the handle;
	// their entries are what is left in the table.
	return dropped + n.k.packets.drain(drop)
}

var (
	queueUserAPC = kernel32.NewProc("QueueUserAPC")
	// apcFunc is the APC queued to interrupt a wait: it does nothing; the
	// wait it ends does the rest.
	apcFunc = sync.OnceValue(func() uintptr {
		return windows.NewCallback(func(uintptr) uintptr { return 0 })
	})
)

// queueAPC queues apcFunc to t's thread.
func queueAPC(t *thread) {
	queueUserAPC.Call(apcFunc(), uintptr(t.h), 0)
}
