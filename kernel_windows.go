package iocp

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"

	"golang.org/x/sys/windows"
)

// kernelPort is a Windows I/O completion port made by
// CreateIoCompletionPort: the native backend's queue, whose waiters the
// kernel releases in LIFO order and whose concurrency value the kernel
// enforces for the threads that wait on it. Posted packets live in slots;
// the kernel carries each one's slot number as the completion key and its
// Bytes as the bytes transferred.
//
// TODO(issue 4): this is the kernel layer only; Port does not use it yet.
type kernelPort struct {
	h     windows.Handle
	slots slotTable
}

func newKernelPort(concurrency int) (*kernelPort, error) {
	h, err := windows.CreateIoCompletionPort(windows.InvalidHandle, 0, 0, uint32(concurrency))
	if err != nil {
		return nil, fmt.Errorf("iocp: CreateIoCompletionPort: %w", err)
	}
	return &kernelPort{h: h}, nil
}

// post queues *pkt: PostQueuedCompletionStatus.
func (k *kernelPort) post(pkt *Packet) error {
	s := k.slots.put(pkt)
	if err := windows.PostQueuedCompletionStatus(k.h, uint32(pkt.Bytes), s, nil); err != nil {
		k.slots.take(s)
		return kernelError("PostQueuedCompletionStatus", err)
	}
	return nil
}

// get waits up to timeout milliseconds (windows.INFINITE: for ever) for
// packets and takes up to len(dst) of them: GetQueuedCompletionStatusEx,
// or GetQueuedCompletionStatus for one packet or where Ex is missing.
func (k *kernelPort) get(dst []Packet, timeout uint32) (int, error) {
	if len(dst) > 1 && getQueuedCompletionStatusEx.Find() == nil {
		return k.getEx(dst, timeout)
	}
	var qty uint32
	var key uintptr
	var ov *windows.Overlapped
	// Only posted packets reach this port so far, and they carry no
	// OVERLAPPED: an error is the call's own, never a failed operation's.
	if err := windows.GetQueuedCompletionStatus(k.h, &qty, &key, &ov, timeout); err != nil {
		return 0, kernelError("GetQueuedCompletionStatus", err)
	}
	dst[0] = k.slots.take(key)
	return 1, nil
}

// overlappedEntry is OVERLAPPED_ENTRY, which x/sys/windows does not
// define. The Overlapped field is a uintptr: the kernel returns there the
// OVERLAPPED an operation was started with, memory the Go collector does
// not manage, and posted packets carry none.
type overlappedEntry struct {
	Key        uintptr
	Overlapped uintptr
	Internal   uintptr
	Bytes      uint32
}

// getQueuedCompletionStatusEx is loaded on first use: x/sys/windows does
// not wrap it.
var getQueuedCompletionStatusEx = windows.NewLazySystemDLL("kernel32.dll").NewProc("GetQueuedCompletionStatusEx")

// entriesPool holds the OVERLAPPED_ENTRY arrays of getEx, so that a batch
// allocates nothing.
var entriesPool = sync.Pool{New: func() any { return new([maxBatch]overlappedEntry) }}

// maxBatch bounds one GetQueuedCompletionStatusEx call.
const maxBatch = 64

func (k *kernelPort) getEx(dst []Packet, timeout uint32) (int, error) {
	entries := entriesPool.Get().(*[maxBatch]overlappedEntry)
	defer entriesPool.Put(entries)
	count := min(len(dst), maxBatch)
	var removed uint32
	r, _, err := getQueuedCompletionStatusEx.Call(uintptr(k.h),
		uintptr(unsafe.Pointer(&entries[0])), uintptr(count),
		uintptr(unsafe.Pointer(&removed)), uintptr(timeout), 0)
	if r == 0 {
		return 0, kernelError("GetQueuedCompletionStatusEx", err)
	}
	for i := range removed {
		dst[i] = k.slots.take(entries[i].Key)
	}
	return int(removed), nil
}

// close closes the port's handle: every thread waiting on it returns
// ERROR_ABANDONED_WAIT_0, which get maps to ErrClosed. The packets still
// queued are dropped by the kernel; their slots are freed with the table.
func (k *kernelPort) close() error {
	if err := windows.CloseHandle(k.h); err != nil {
		return kernelError("CloseHandle", err)
	}
	return nil
}

// errTimeout is get's error when its timeout passes with nothing queued.
var errTimeout = errors.New("iocp: wait timed out")

// kernelError maps a Windows error onto the package's sentinels.
func kernelError(call string, err error) error {
	switch {
	case errors.Is(err, windows.ERROR_ABANDONED_WAIT_0), errors.Is(err, windows.ERROR_INVALID_HANDLE):
		return ErrClosed
	case errors.Is(err, windows.WAIT_TIMEOUT):
		return errTimeout
	}
	return fmt.Errorf("iocp: %s: %w", call, err)
}
