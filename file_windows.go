package iocp

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

// A File is a handle that the program opened for overlapped I/O itself (a
// file or a named pipe made with FILE_FLAG_OVERLAPPED), associated with a
// native port by AssociateFile: CreateIoCompletionPort(handle, port, ...).
// Its operations are the kernel's own, ReadFile and WriteFile with an
// OVERLAPPED, and they complete on the port as packets that carry the
// File's key and the operation's Overlapped, whose result fields are
// filled when the packet is dequeued (S42), as for a Handle.
//
// A File owns its handle from AssociateFile on: Close closes it, and Port's
// Close closes it too. All methods are safe for concurrent use.
type File struct {
	n   *nativePort
	h   windows.Handle
	key any

	mu      sync.Mutex
	pending map[*Overlapped]uintptr // operations started, not dequeued: their OVERLAPPED's address; guarded by mu
	closed  bool                    // guarded by mu
}

// AssociateFile associates h, opened with FILE_FLAG_OVERLAPPED, with the
// port, which must have been made with WithNative; the packets of its
// operations carry key. A handle that is already associated with a
// completion port (every socket and file that the Go runtime opened is,
// with its own) cannot be associated again: the error matches
// ErrAssociated. On a closed port it returns ErrClosed.
func (p *Port) AssociateFile(h windows.Handle, key any) (*File, error) {
	n := p.native
	if n == nil {
		return nil, fmt.Errorf("iocp: AssociateFile on a port made without WithNative: %w", ErrInvalid)
	}
	if h == 0 || h == windows.InvalidHandle {
		return nil, fmt.Errorf("iocp: AssociateFile of an invalid handle: %w", ErrInvalid)
	}
	n.users.Add(1)
	defer n.users.Add(-1)
	if n.closed.Load() || p.gate.Load()&refusePost != 0 {
		return nil, ErrClosed
	}
	if _, err := windows.CreateIoCompletionPort(h, n.k.h, 0, 0); err != nil {
		if errors.Is(err, windows.ERROR_INVALID_PARAMETER) {
			return nil, fmt.Errorf("iocp: AssociateFile: the handle belongs to another completion port (%w): %w", err, ErrAssociated)
		}
		return nil, fmt.Errorf("iocp: AssociateFile: %w", err)
	}
	f := &File{n: n, h: h, key: key, pending: make(map[*Overlapped]uintptr)}
	p.associated.Store(true) // before any operation: see settleAll
	n.mu.Lock()
	n.files[f] = struct{}{}
	n.mu.Unlock()
	return f, nil
}

// Key returns the key the File's packets carry.
func (f *File) Key() any { return f.key }

// Read starts a ReadFile into b at ov.Offset (ignored by pipes and other
// streams). The packet's Bytes is the count read; at the end of a file or
// of a pipe whose writer closed, its Err is io.EOF. b belongs to the
// operation until its packet is dequeued.
func (f *File) Read(ov *Overlapped, b []byte) error { return f.start(ov, b, opRead) }

// Write starts a WriteFile of b at ov.Offset (ignored by pipes and other
// streams). b belongs to the operation until its packet is dequeued.
func (f *File) Write(ov *Overlapped, b []byte) error { return f.start(ov, b, opWrite) }

// Cancel cancels ov's operation (CancelIoEx): it completes with one packet,
// with its normal result if it finished first, otherwise with an error
// that matches ErrAborted (S44). Cancel of an Overlapped that has no
// operation pending on f returns ErrNotPending, and a nil one ErrInvalid,
// as Handle.Cancel does.
func (f *File) Cancel(ov *Overlapped) error {
	if ov == nil {
		return errNilOverlapped
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	addr, ok := f.pending[ov]
	if !ok {
		return ErrNotPending
	}
	if err := cancelIoEx(f.h, addr); err != nil && err != windows.ERROR_NOT_FOUND {
		return fmt.Errorf("iocp: CancelIoEx: %w", err)
	}
	return nil // ERROR_NOT_FOUND: it completed; its packet is on its way
}

// Close cancels every operation pending on f, each of which completes with
// one packet (S45), and closes the handle. Later operations return
// ErrHandleClosed, and so does a second Close.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrHandleClosed
	}
	f.closed = true
	f.n.mu.Lock()
	delete(f.n.files, f)
	f.n.mu.Unlock()
	if len(f.pending) > 0 {
		cancelIoEx(f.h, 0)
	}
	if err := windows.CloseHandle(f.h); err != nil {
		return fmt.Errorf("iocp: CloseHandle: %w", err)
	}
	return nil
}

func (f *File) start(ov *Overlapped, b []byte, op opKind) error {
	switch {
	case ov == nil:
		return errNilOverlapped
	case ov.Offset < 0:
		return errNegOffset
	}
	n := f.n
	n.users.Add(1)
	defer n.users.Add(-1)
	if n.closed.Load() {
		return ErrClosed
	}
	if !ov.o.state.CompareAndSwap(ovReady, ovPending) {
		return ErrPending
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		ov.o.state.Store(ovReady)
		return ErrHandleClosed
	}
	// Everything the completion needs is in place before the call: its
	// packet may be dequeued before the call returns (S46).
	addr, kov := n.k.ops.put(f, ov, b, op)
	kov.Offset, kov.OffsetHigh = uint32(ov.Offset), uint32(ov.Offset>>32)
	f.pending[ov] = addr
	f.mu.Unlock()

	var buf uintptr
	if len(b) > 0 {
		buf = uintptr(unsafe.Pointer(&b[0]))
	}
	proc := procReadFile
	if op == opWrite {
		proc = procWriteFile
	}
	r, _, e := syscall.SyscallN(proc.Addr(), uintptr(f.h), buf, uintptr(len(b)), 0, addr)
	if r != 0 || e == windows.ERROR_IO_PENDING {
		return nil // done or under way: either way a packet comes
	}
	// Failed before it started: no packet comes (S43).
	f.mu.Lock()
	delete(f.pending, ov)
	f.mu.Unlock()
	n.k.ops.take(addr)
	ov.o.state.Store(ovReady)
	return opError(op, e)
}

// complete turns a dequeued completion of an operation of f into its
// packet.
func (f *File) complete(ov *Overlapped, op opKind, bytes uint32, status windows.NTStatus) Packet {
	f.mu.Lock()
	delete(f.pending, ov)
	f.mu.Unlock()
	var err error
	if status != windows.STATUS_SUCCESS {
		err = opError(op, status.Errno())
	}
	o := &ov.o
	o.n, o.err = int(bytes), err
	o.state.Store(ovDone) // settleAll, right after, copies the result
	return Packet{Key: f.key, Bytes: int(bytes), Overlapped: ov, Err: err}
}

// opError is the error of a file operation that failed with e.
func opError(op opKind, e syscall.Errno) error {
	switch e {
	case windows.ERROR_HANDLE_EOF, windows.ERROR_BROKEN_PIPE:
		return io.EOF
	case windows.ERROR_OPERATION_ABORTED:
		return &abortError{fmt.Errorf("iocp: %s: %w", opNames[op], e)}
	}
	return fmt.Errorf("iocp: %s: %w", opNames[op], e)
}

var (
	procReadFile   = kernel32.NewProc("ReadFile")
	procWriteFile  = kernel32.NewProc("WriteFile")
	procCancelIoEx = kernel32.NewProc("CancelIoEx")
)

// cancelIoEx is CancelIoEx with the OVERLAPPED as an address (0: all of
// the handle's operations): the OVERLAPPEDs live in pinned chunks (opTable).
func cancelIoEx(h windows.Handle, ov uintptr) error {
	if r, _, e := syscall.SyscallN(procCancelIoEx.Addr(), uintptr(h), ov); r == 0 {
		return e
	}
	return nil
}

// opTable keeps the file operations in flight. Each one's OVERLAPPED is in
// a chunk of the table's, and the kernel gives its address back with the
// completion, which finds the operation: nothing is converted from an
// address back to a pointer. From an operation's start to its dequeue,
// its OVERLAPPED and its buffer are pinned (runtime.Pinner), as the kernel
// may write them at any time; a table with nothing in flight pins nothing.
type opTable struct {
	mu     sync.Mutex
	chunks []*[chunkOps]windows.Overlapped // guarded by mu
	ops    []fileOp                        // guarded by mu; ops[i] is OVERLAPPED i
	vacant []int                           // guarded by mu; indexes of ops that hold no operation
}

const chunkOps = 256

type fileOp struct {
	f   *File
	ov  *Overlapped
	op  opKind
	pin runtime.Pinner // its OVERLAPPED and its buffer
}

// put records an operation and returns its OVERLAPPED, zeroed, and that
// OVERLAPPED's address.
func (t *opTable) put(f *File, ov *Overlapped, b []byte, op opKind) (uintptr, *windows.Overlapped) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.vacant) == 0 {
		c := new([chunkOps]windows.Overlapped)
		base := len(t.ops)
		t.chunks = append(t.chunks, c)
		t.ops = append(t.ops, make([]fileOp, chunkOps)...)
		for i := chunkOps - 1; i >= 0; i-- {
			t.vacant = append(t.vacant, base+i)
		}
	}
	i := t.vacant[len(t.vacant)-1]
	t.vacant = t.vacant[:len(t.vacant)-1]
	o := &t.ops[i]
	o.f, o.ov, o.op = f, ov, op
	kov := &t.chunks[i/chunkOps][i%chunkOps]
	*kov = windows.Overlapped{}
	o.pin.Pin(kov)
	if len(b) > 0 {
		o.pin.Pin(&b[0])
	}
	return uintptr(unsafe.Pointer(kov)), kov
}

// take removes the operation whose OVERLAPPED is at addr and returns it,
// with the status the kernel wrote there.
func (t *opTable) take(addr uintptr) (*File, *Overlapped, opKind, windows.NTStatus) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c, chunk := range t.chunks {
		base := uintptr(unsafe.Pointer(&chunk[0]))
		if addr < base || addr >= base+unsafe.Sizeof(*chunk) {
			continue
		}
		j := int((addr - base) / unsafe.Sizeof(chunk[0]))
		i := c*chunkOps + j
		status := windows.NTStatus(chunk[j].Internal) // written before the completion was queued
		o := &t.ops[i]
		o.pin.Unpin()
		f, ov := o.f, o.ov
		o.f, o.ov = nil, nil
		t.vacant = append(t.vacant, i)
		return f, ov, o.op, status
	}
	panic("iocp: a completion's OVERLAPPED is not one of this port's")
}

// inFlight returns the number of operations not yet taken.
func (t *opTable) inFlight() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.ops) - len(t.vacant)
}
