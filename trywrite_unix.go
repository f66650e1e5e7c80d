//go:build unix

package iocp

import (
	"net"
	"syscall"
)

// A rawWriter makes one non-blocking write(2) to a socket. One belongs to
// each Handle whose source is a socket; the write lane uses it only while
// it holds the lane, so its fields need no lock. Its function is made
// once, so that a try allocates nothing.
type rawWriter struct {
	rc  syscall.RawConn
	buf []byte
	n   int
	fn  func(fd uintptr) bool
}

// newRawWriter returns a rawWriter for src, or nil if src is not a socket.
func newRawWriter(src any) *rawWriter {
	c, ok := src.(interface {
		net.Conn
		syscall.Conn
	})
	if !ok {
		return nil
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	w := &rawWriter{rc: rc}
	w.fn = w.write
	return w
}

func (w *rawWriter) write(fd uintptr) bool {
	w.n, _ = syscall.Write(int(fd), w.buf)
	return true // one attempt: never wait for the socket
}

// try writes what of buf the socket takes without waiting, and returns
// how much that was: 0 when its buffer is full or the write failed. The
// Go runtime keeps sockets non-blocking. The caller writes the rest the
// usual way, which reports any error as net.Conn does.
func (w *rawWriter) try(buf []byte) int {
	w.buf, w.n = buf, 0
	err := w.rc.Write(w.fn)
	w.buf = nil
	if err != nil || w.n < 0 {
		return 0
	}
	return w.n
}
