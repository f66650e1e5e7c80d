package iocp

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

// kernelPort is a Windows I/O completion port made by
// CreateIoCompletionPort: the native backend's queue, whose waiters the
// kernel releases in LIFO order and whose concurrency value the kernel
// enforces for the threads that wait on it. Posted packets live in entries
// of a table; the kernel carries each one's entry number as the completion
// key and its Bytes as the bytes transferred. The backend built on it is nativePort.
type kernelPort struct {
	h       windows.Handle
	packets packetTable // posted packets
	ops     opTable     // File operations in flight
}

func newKernelPort(concurrency int) (*kernelPort, error) {
	h, err := windows.CreateIoCompletionPort(windows.InvalidHandle, 0, 0, uint32(concurrency))
	if err != nil {
		return nil, fmt.Errorf("iocp: CreateIoCompletionPort: %w", err)
	}
	return &kernelPort{h: h}, nil
}

// post queues *pkt: PostQueuedCompletionStatus. With limit > 0 it
// returns ErrQueueFull when limit posted packets are queued.
func (k *kernelPort) post(pkt *Packet, limit int) error {
	e, ok := k.packets.put(pkt, limit)
	if !ok {
		return ErrQueueFull
	}
	if err := windows.PostQueuedCompletionStatus(k.h, uint32(pkt.Bytes), e, nil); err != nil {
		k.packets.take(e)
		return kernelError("PostQueuedCompletionStatus", err)
	}
	return nil
}

// get waits up to timeout milliseconds (windows.INFINITE: for ever) for
// packets and takes up to len(dst) of them, oldest first, with
// GetQueuedCompletionStatusEx; an alertable wait also ends when an APC
// runs on the thread (errInterrupted). A packet is a posted one, found in
// the packet table by its key, or the completion of a File's operation,
// found in the operation table by its OVERLAPPED.
//
// GetQueuedCompletionStatusEx is called with syscall.SyscallN and its
// error mapped from the Errno: LazyProc.Call would move its arguments to
// the heap, and x/sys/windows would box every WAIT_TIMEOUT into an error,
// an allocation each.
func (k *kernelPort) get(dst []Packet, timeout uint32, alertable bool) (int, error) {
	batch := batchPool.Get().(*[maxBatch]overlappedEntry)
	defer batchPool.Put(batch)
	count := min(len(dst), maxBatch)
	var removed uint32
	r, _, e := syscall.SyscallN(getQueuedCompletionStatusEx.Addr(), uintptr(k.h),
		uintptr(unsafe.Pointer(&batch[0])), uintptr(count),
		uintptr(unsafe.Pointer(&removed)), uintptr(timeout), boolArg(alertable))
	if r == 0 {
		return 0, errnoError("GetQueuedCompletionStatusEx", e)
	}
	for i, oe := range batch[:removed] {
		if oe.Overlapped == 0 {
			dst[i] = k.packets.take(oe.Key)
			continue
		}
		f, ov, op, status := k.ops.take(oe.Overlapped)
		dst[i] = f.complete(ov, op, oe.Bytes, status)
	}
	return int(removed), nil
}

var (
	kernel32                      = windows.NewLazySystemDLL("kernel32.dll")
	procGetQueuedCompletionStatus = kernel32.NewProc("GetQueuedCompletionStatus")
	// GetQueuedCompletionStatusEx is not in x/sys/windows.
	getQueuedCompletionStatusEx = kernel32.NewProc("GetQueuedCompletionStatusEx")
)

func getQueuedCompletionStatus(port windows.Handle, qty *uint32, key, ov *uintptr, timeout uint32) (bool, syscall.Errno) {
	r, _, e := syscall.SyscallN(procGetQueuedCompletionStatus.Addr(), uintptr(port),
		uintptr(unsafe.Pointer(qty)), uintptr(unsafe.Pointer(key)), uintptr(unsafe.Pointer(ov)), uintptr(timeout))
	return r != 0, e
}

// overlappedEntry is OVERLAPPED_ENTRY, which x/sys/windows does not
// define. The Overlapped field is a uintptr: the kernel returns there the
// address of the OVERLAPPED a File's operation was started with, which the
// operation table looks up (it is never turned back into a pointer), and
// posted packets carry none.
type overlappedEntry struct {
	Key        uintptr
	Overlapped uintptr
	Internal   uintptr
	Bytes      uint32
}

// batchPool holds the OVERLAPPED_ENTRY arrays of get, so that a wait
// allocates nothing.
var batchPool = sync.Pool{New: func() any { return new([maxBatch]overlappedEntry) }}

// maxBatch bounds one GetQueuedCompletionStatusEx call.
const maxBatch = 64

func boolArg(b bool) uintptr {
	if b {
		return 1
	}
	return 0
}

// close closes the port's handle: every thread waiting on it returns
// ERROR_ABANDONED_WAIT_0, which get maps to ErrClosed. The packets still
// queued are dropped by the kernel; their entries go with the table.
func (k *kernelPort) close() error {
	if err := windows.CloseHandle(k.h); err != nil {
		return kernelError("CloseHandle", err)
	}
	return nil
}

// errTimeout is get's error when its timeout passes with nothing queued;
// errInterrupted, when an APC ended its alertable wait.
var (
	errTimeout     = errors.New("iocp: wait timed out")
	errInterrupted = errors.New("iocp: wait interrupted")
)

// kernelError maps the error of a Windows call onto the package's
// sentinels.
func kernelError(call string, err error) error {
	if e, ok := err.(syscall.Errno); ok {
		return errnoError(call, e)
	}
	return fmt.Errorf("iocp: %s: %w", call, err)
}

// errnoError is kernelError for an Errno, which it boxes only when it is
// none of the expected ones.
func errnoError(call string, e syscall.Errno) error {
	switch e {
	case windows.ERROR_ABANDONED_WAIT_0, windows.ERROR_INVALID_HANDLE:
		return ErrClosed
	case windows.WAIT_TIMEOUT:
		return errTimeout
	case windows.WAIT_IO_COMPLETION:
		return errInterrupted
	}
	return fmt.Errorf("iocp: %s: %w", call, e)
}
