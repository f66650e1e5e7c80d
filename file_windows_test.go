package iocp

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/windows"
)

// openOverlapped opens (creating) a file for overlapped I/O under the
// temporary directory; the test removes it when it ends, as well as it can
// (Wine does not always let it).
func openOverlapped(t *testing.T) windows.Handle {
	t.Helper()
	path := filepath.Join(os.TempDir(), fmt.Sprintf("iocp-file-%d-%d", os.Getpid(), fileSeq.Add(1)))
	name, err := windows.UTF16PtrFromString(path)
	require.NoError(t, err)
	h, err := windows.CreateFile(name, windows.GENERIC_READ|windows.GENERIC_WRITE, 0, nil,
		windows.CREATE_ALWAYS, windows.FILE_FLAG_OVERLAPPED, 0)
	require.NoError(t, err)
	t.Cleanup(func() { os.Remove(path) })
	return h
}

var fileSeq atomic.Int64

// pipePair makes a named pipe for overlapped I/O and connects a client to
// it.
func pipePair(t *testing.T) (server, client windows.Handle) {
	t.Helper()
	name, err := windows.UTF16PtrFromString(fmt.Sprintf(`\\.\pipe\iocp-test-%d-%d`, os.Getpid(), fileSeq.Add(1)))
	require.NoError(t, err)
	server, err = windows.CreateNamedPipe(name, windows.PIPE_ACCESS_DUPLEX|windows.FILE_FLAG_OVERLAPPED,
		windows.PIPE_TYPE_BYTE, 1, 4096, 4096, 0, nil)
	require.NoError(t, err)
	client, err = windows.CreateFile(name, windows.GENERIC_READ|windows.GENERIC_WRITE, 0, nil,
		windows.OPEN_EXISTING, windows.FILE_FLAG_OVERLAPPED, 0)
	require.NoError(t, err)
	return server, client
}

func associateFile(t *testing.T, p *Port, h windows.Handle, key any) *File {
	t.Helper()
	f, err := p.AssociateFile(h, key)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

// eof requires a read that started with err to end with io.EOF: at once
// (the kernel failed it before it started, and no packet comes) or in its
// packet.
func eof(t *testing.T, w *Worker, err error) {
	t.Helper()
	if err != nil {
		assert.ErrorIs(t, err, io.EOF)
		return
	}
	assert.ErrorIs(t, next(t, w).Err, io.EOF)
}

func TestFile(t *testing.T) {
	t.Run("ReadWriteAtOffsets", func(t *testing.T) {
		p := newNativePort(t, 1)
		f := associateFile(t, p, openOverlapped(t), "file")
		w := p.NewWorker()
		defer w.Close()

		wov := Overlapped{Value: "w", Offset: 0}
		require.NoError(t, f.Write(&wov, []byte("hello world")))
		pkt := next(t, w)
		assert.Equal(t, Packet{Key: "file", Bytes: 11, Overlapped: &wov}, pkt)
		assert.Equal(t, 11, wov.Bytes)

		rov := Overlapped{Offset: 6}
		buf := make([]byte, 16)
		require.NoError(t, f.Read(&rov, buf))
		pkt = next(t, w)
		require.NoError(t, pkt.Err)
		assert.Same(t, &rov, pkt.Overlapped)
		assert.Equal(t, "world", string(buf[:pkt.Bytes]))
		assert.Equal(t, 5, rov.Bytes, "filled at the dequeue")

		rov.Offset = 100
		eof(t, w, f.Read(&rov, buf))
		assert.Zero(t, p.Stats().Queued)
	})

	t.Run("PipeCancelAndClose", func(t *testing.T) {
		p := newNativePort(t, 2)
		server, client := pipePair(t)
		fs := associateFile(t, p, server, "server")
		fc := associateFile(t, p, client, "client")
		w := p.NewWorker()
		defer w.Close()

		var rov, wov Overlapped
		buf := make([]byte, 8)
		require.NoError(t, fs.Read(&rov, buf))
		assert.ErrorIs(t, fs.Read(&rov, buf), ErrPending)
		require.NoError(t, fc.Write(&wov, []byte("ping")))
		got := bytesByKey(t, 2, func() Packet { return next(t, w) })
		assert.Equal(t, map[any]int{"server": 4, "client": 4}, got)
		assert.Equal(t, "ping", string(buf[:4]))

		// Cancel of a pending read: one packet, aborted.
		require.NoError(t, fs.Read(&rov, buf))
		require.NoError(t, fs.Cancel(&rov))
		pkt := next(t, w)
		assert.Same(t, &rov, pkt.Overlapped)
		assert.ErrorIs(t, pkt.Err, ErrAborted)
		assert.ErrorIs(t, rov.Err, ErrAborted)
		assert.ErrorIs(t, fs.Cancel(&rov), ErrNotPending)

		// Close with a read pending: one packet, aborted; then the File
		// refuses operations.
		require.NoError(t, fs.Read(&rov, buf))
		require.NoError(t, fs.Close())
		pkt = next(t, w)
		assert.ErrorIs(t, pkt.Err, ErrAborted)
		assert.ErrorIs(t, fs.Read(&rov, buf), ErrHandleClosed)
		assert.ErrorIs(t, fs.Close(), ErrHandleClosed)

		// The client sees the end of the pipe.
		eof(t, w, fc.Read(&rov, buf))
	})

	t.Run("PortCloseAbortsAll", func(t *testing.T) {
		p, err := NewPort(1, WithNative())
		require.NoError(t, err)
		server, client := pipePair(t)
		fs, err := p.AssociateFile(server, "server")
		require.NoError(t, err)
		var ovs [3]Overlapped
		for i := range ovs {
			require.NoError(t, fs.Read(&ovs[i], make([]byte, 4)))
		}
		require.NoError(t, p.Post(Packet{Key: "posted"}))
		require.NoError(t, p.Close())
		assert.Equal(t, uint64(4), p.Stats().Discarded, "three aborted reads and a posted packet")
		for i := range ovs {
			assert.Equal(t, uint32(ovReady), ovs[i].o.state.Load(), "ov %d is ready again", i)
		}
		assert.ErrorIs(t, fs.Close(), ErrHandleClosed, "Port.Close closed it")
		windows.CloseHandle(client)
	})

	t.Run("BadInput", func(t *testing.T) {
		pure := pureGoPort(t)
		h := openOverlapped(t)
		defer windows.CloseHandle(h) // not the port's: it was refused
		_, err := pure.AssociateFile(h, 1)
		assert.ErrorIs(t, err, ErrInvalid, "a pure-Go port")

		p := newNativePort(t, 1)
		_, err = p.AssociateFile(windows.InvalidHandle, 1)
		assert.ErrorIs(t, err, ErrInvalid)
		f := associateFile(t, p, openOverlapped(t), 1)
		assert.ErrorIs(t, f.Read(nil, nil), ErrInvalid)
		assert.ErrorIs(t, f.Write(&Overlapped{Offset: -1}, nil), ErrInvalid)
		assert.ErrorIs(t, f.Cancel(&Overlapped{}), ErrNotPending)
		assert.ErrorIs(t, f.Cancel(nil), ErrInvalid)

		// A socket that the Go runtime associated with its own port.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		raw, err := ln.(*net.TCPListener).SyscallConn()
		require.NoError(t, err)
		var assocErr error
		require.NoError(t, raw.Control(func(fd uintptr) {
			_, assocErr = p.AssociateFile(windows.Handle(fd), 2)
		}))
		assert.ErrorIs(t, assocErr, ErrAssociated)

		p.Close()
		_, err = p.AssociateFile(h, 3)
		assert.ErrorIs(t, err, ErrClosed)
		assert.ErrorIs(t, f.Read(&Overlapped{}, make([]byte, 1)), ErrClosed)
	})
}
