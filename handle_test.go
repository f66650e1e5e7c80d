package iocp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The statements about associated sources, run by TestSpec. S42, S46
// and S47, about completions, are in completion_test.go.
var associateSpec = []struct {
	name string
	fn   func(*testing.T)
}{
	{"S40_AssociateSources", testS40},
	{"S41_OnePortPerSource", testS41},
	{"S42_OnePacketResultAtDequeue", testS42},
	{"S43_FailsBeforeStart", testS43},
	{"S44_Cancel", testS44},
	{"S45_HandleClose", testS45},
	{"S46_CompletionBeforeReturn", testS46},
	{"S47_ValueTravels", testS47},
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	server = <-accepted
	require.NotNil(t, server)
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// cancelRunning starts an operation on ov with start, waits until it runs
// in h's read lane, and cancels it.
func cancelRunning(t *testing.T, h *Handle, ov *Overlapped, start func() error) {
	t.Helper()
	require.NoError(t, start())
	untilRunning(t, h, laneRead)
	require.NoError(t, h.Cancel(ov))
}

// listenUDP returns a UDP socket on loopback, or skips the test under
// Wine, where Go's UDP sockets cannot be made: the WSAIoctl that turns off
// connection-reset reports fails there with WSAEOPNOTSUPP.
func listenUDP(t *testing.T) net.PacketConn {
	t.Helper()
	if underWine() {
		t.Skip("Wine: net.ListenPacket(\"udp\") fails (wsaioctl: WSAEOPNOTSUPP)")
	}
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// tempFile creates a file in a directory that is removed when the test
// ends. Under Wine the removal fails ("Invalid function") and is only
// logged.
func tempFile(t *testing.T) *os.File {
	t.Helper()
	dir := ""
	if underWine() {
		var err error
		dir, err = os.MkdirTemp("", "iocp")
		require.NoError(t, err)
		t.Cleanup(func() {
			if err := os.RemoveAll(dir); err != nil {
				t.Logf("Wine: %v", err)
			}
		})
	} else {
		dir = t.TempDir()
	}
	f, err := os.Create(filepath.Join(dir, "f"))
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

// associate associates src with p and closes the handle when the test ends.
func associate(t *testing.T, p *Port, src, key any) *Handle {
	t.Helper()
	h, err := p.Associate(src, key)
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	return h
}

// next dequeues one packet with a worker, within patience.
func next(t *testing.T, w *Worker) Packet {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	pkt, err := w.Get(ctx)
	require.NoError(t, err, "no packet came")
	return pkt
}

// nextOn dequeues one packet with a worker of its own, for tests whose
// subtests run on goroutines of their own: a native port's worker keeps
// the goroutine of its first Get.
func nextOn(t *testing.T, p *Port) Packet {
	t.Helper()
	w := p.NewWorker()
	defer w.Close()
	return next(t, w)
}

// bytesByKey takes n packets from next, requires each to have succeeded,
// and returns each key's bytes.
func bytesByKey(t *testing.T, n int, next func() Packet) map[any]int {
	t.Helper()
	got := map[any]int{}
	for range n {
		pkt := next()
		require.NoError(t, pkt.Err)
		got[pkt.Key] = pkt.Bytes
	}
	return got
}

// nothingQueued asserts that no packet is queued, now and after a pause
// long enough for a wrong one to arrive on an unloaded machine. (A passing
// run proves nothing about speed: a slow machine only makes this weaker.)
func nothingQueued(t *testing.T, p *Port) {
	t.Helper()
	time.Sleep(20 * time.Millisecond)
	assert.Zero(t, p.Stats().Queued, "a packet was queued")
}

// blockingReader is a source that cannot be interrupted: its Read returns
// only when a line is sent on lines.
type blockingReader struct {
	lines chan string
}

func (r *blockingReader) Read(b []byte) (int, error) { return copy(b, <-r.lines), nil }

// untilRunning waits until a Read of h's is running: a cancel then interrupts
// it rather than dropping it before it starts.
func untilRunning(t *testing.T, h *Handle, lane int) {
	t.Helper()
	eventually(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.lanes[lane].cur != nil
	}, "the operation runs")
}

type readerAtOnly struct{ s string }

func (r readerAtOnly) ReadAt(b []byte, off int64) (int, error) {
	return strings.NewReader(r.s).ReadAt(b, off)
}

type writerAtOnly struct{ b []byte }

func (w *writerAtOnly) WriteAt(b []byte, off int64) (int, error) {
	return copy(w.b[off:], b), nil
}

func testS40(t *testing.T) {
	p := newPort(t, 2)

	// expect dequeues one packet and checks that it completes ov on the
	// handle's key with n bytes and no error.
	expect := func(t *testing.T, key any, ov *Overlapped, n int) {
		t.Helper()
		pkt := nextOn(t, p)
		assert.Equal(t, key, pkt.Key)
		assert.Same(t, ov, pkt.Overlapped)
		assert.NoError(t, pkt.Err)
		assert.Equal(t, n, pkt.Bytes)
		assert.Equal(t, n, ov.Bytes)
	}

	t.Run("net.Conn", func(t *testing.T) {
		client, server := tcpPair(t)
		h := associate(t, p, server, "conn")
		var rov, wov Overlapped
		buf := make([]byte, 16)
		require.NoError(t, h.Read(&rov, buf))
		_, err := client.Write([]byte("hello"))
		require.NoError(t, err)
		expect(t, "conn", &rov, 5)
		assert.Equal(t, "hello", string(buf[:5]))

		require.NoError(t, h.Write(&wov, []byte("world")))
		expect(t, "conn", &wov, 5)
		got := make([]byte, 5)
		_, err = io.ReadFull(client, got)
		require.NoError(t, err)
		assert.Equal(t, "world", string(got))
	})

	t.Run("net.Listener", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		h := associate(t, p, ln, 7)
		var ov Overlapped
		require.NoError(t, h.Accept(&ov))
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		expect(t, 7, &ov, 0)
		require.NotNil(t, ov.Conn)
		assert.Equal(t, c.LocalAddr().String(), ov.Conn.RemoteAddr().String())
		ov.Conn.Close()
	})

	t.Run("net.PacketConn", func(t *testing.T) {
		a, b := listenUDP(t), listenUDP(t)
		h := associate(t, p, a, "udp")
		var rov, wov Overlapped
		buf := make([]byte, 64)
		require.NoError(t, h.ReadFrom(&rov, buf))
		_, err := b.WriteTo([]byte("ping"), a.LocalAddr())
		require.NoError(t, err)
		expect(t, "udp", &rov, 4)
		assert.Equal(t, "ping", string(buf[:4]))
		assert.Equal(t, b.LocalAddr().String(), rov.Addr.String())

		require.NoError(t, h.WriteTo(&wov, []byte("pong"), b.LocalAddr()))
		expect(t, "udp", &wov, 4)
		n, from, err := b.ReadFrom(buf)
		require.NoError(t, err)
		assert.Equal(t, "pong", string(buf[:n]))
		assert.Equal(t, a.LocalAddr().String(), from.String())
	})

	t.Run("os.File", func(t *testing.T) {
		f := tempFile(t)
		h := associate(t, p, f, "file")
		var ov Overlapped
		require.NoError(t, h.Write(&ov, []byte("0123456789")))
		expect(t, "file", &ov, 10)
		ov.Offset = 3
		require.NoError(t, h.WriteAt(&ov, []byte("abc")))
		expect(t, "file", &ov, 3)
		buf := make([]byte, 4)
		ov.Offset = 2
		require.NoError(t, h.ReadAt(&ov, buf))
		expect(t, "file", &ov, 4)
		assert.Equal(t, "2abc", string(buf))
		// Read continues from the file's position, at its end.
		require.NoError(t, h.Read(&ov, buf))
		pkt := nextOn(t, p)
		assert.ErrorIs(t, pkt.Err, io.EOF)
		assert.ErrorIs(t, ov.Err, io.EOF)
	})

	t.Run("pipe", func(t *testing.T) {
		r, wr, err := os.Pipe()
		require.NoError(t, err)
		hr := associate(t, p, r, "r")
		hw := associate(t, p, wr, "w")
		var rov, wov Overlapped
		buf := make([]byte, 8)
		require.NoError(t, hr.Read(&rov, buf))
		require.NoError(t, hw.Write(&wov, []byte("pipe")))
		got := bytesByKey(t, 2, func() Packet { return nextOn(t, p) })
		assert.Equal(t, map[any]int{"r": 4, "w": 4}, got)
		assert.Equal(t, "pipe", string(buf[:4]))
	})

	t.Run("io interfaces", func(t *testing.T) {
		var ov Overlapped
		buf := make([]byte, 3)

		hr := associate(t, p, io.LimitReader(strings.NewReader("abcdef"), 6), "reader")
		require.NoError(t, hr.Read(&ov, buf))
		expect(t, "reader", &ov, 3)
		assert.Equal(t, "abc", string(buf))

		var out bytes.Buffer
		hw := associate(t, p, &out, "writer")
		require.NoError(t, hw.Write(&ov, []byte("xyz")))
		expect(t, "writer", &ov, 3)
		assert.Equal(t, "xyz", out.String())

		hra := associate(t, p, readerAtOnly{"0123456"}, "readerAt")
		ov.Offset = 4
		require.NoError(t, hra.ReadAt(&ov, buf))
		expect(t, "readerAt", &ov, 3)
		assert.Equal(t, "456", string(buf))

		wa := &writerAtOnly{b: make([]byte, 6)}
		hwa := associate(t, p, wa, "writerAt")
		ov.Offset = 2
		require.NoError(t, hwa.WriteAt(&ov, []byte("ab")))
		expect(t, "writerAt", &ov, 2)
		assert.Equal(t, "\x00\x00ab\x00\x00", string(wa.b))
	})

	t.Run("func", func(t *testing.T) {
		h := associate(t, p, func(ctx context.Context, ov *Overlapped) (int, error) {
			return ov.Value.(int) * 2, nil
		}, "fn")
		ov := Overlapped{Value: 21}
		require.NoError(t, h.Call(&ov))
		expect(t, "fn", &ov, 42)

		// Do runs any function as an operation of any handle.
		require.NoError(t, h.Do(&ov, func(context.Context, *Overlapped) (int, error) { return 5, nil }))
		expect(t, "fn", &ov, 5)
	})

	t.Run("stream order", func(t *testing.T) {
		// Operations of one direction complete in the order they were
		// started, and the bytes go out in that order.
		client, server := tcpPair(t)
		h := associate(t, p, server, "order")
		n := 200
		if testing.Short() {
			n = 50
		}
		ovs := make([]Overlapped, n)
		var want bytes.Buffer
		for i := range ovs {
			msg := fmt.Appendf(nil, "%04d;", i)
			want.Write(msg)
			require.NoError(t, h.Write(&ovs[i], msg))
		}
		read := make(chan []byte, 1)
		go func() {
			b := make([]byte, want.Len())
			io.ReadFull(client, b)
			read <- b
		}()
		for i := range ovs {
			pkt := nextOn(t, p)
			require.Same(t, &ovs[i], pkt.Overlapped, "completion %d", i)
			require.NoError(t, pkt.Err)
		}
		assert.Equal(t, want.String(), string(<-read))

		// Reads too: each takes the next bytes of the stream.
		bufs := make([][]byte, 4)
		for i := range bufs {
			bufs[i] = make([]byte, 5)
			require.NoError(t, h.Read(&ovs[i], bufs[i]))
		}
		for i, s := range []string{"aaaaa", "bbbbb", "ccccc", "ddddd"} {
			// One message at a time, so that every Read gets five bytes.
			_, err := client.Write([]byte(s))
			require.NoError(t, err)
			pkt := nextOn(t, p)
			require.NoError(t, pkt.Err)
			require.Same(t, &ovs[i], pkt.Overlapped, "read %d", i)
			assert.Equal(t, s, string(bufs[i][:pkt.Bytes]))
		}
	})

	t.Run("a handle with no operation holds no goroutine", func(t *testing.T) {
		base := runtime.NumGoroutine()
		const n = 50
		for i := range n {
			// A closure of its own: a func literal that captures nothing
			// is one func value, however often it is evaluated.
			h := associate(t, p, func(context.Context, *Overlapped) (int, error) { return i, nil }, i)
			var ov Overlapped
			require.NoError(t, h.Call(&ov))
			nextOn(t, p)
		}
		eventually(t, func() bool { return runtime.NumGoroutine() <= base },
			"%d handles with no operation hold no goroutine (base %d, now %d)", n, base, runtime.NumGoroutine())
	})
}

func testS41(t *testing.T) {
	p1 := newPort(t, 1)
	p2 := newPort(t, 1)
	_, server := tcpPair(t)
	h := associate(t, p1, server, "first")
	for _, p := range []*Port{p1, p2} {
		_, err := p.Associate(server, "second")
		assert.ErrorIs(t, err, ErrAssociated)
	}

	// The first association stands: its operations complete on p1 with
	// its key.
	w := p1.NewWorker()
	defer w.Close()
	var ov Overlapped
	require.NoError(t, h.Do(&ov, func(context.Context, *Overlapped) (int, error) { return 1, nil }))
	assert.Equal(t, "first", next(t, w).Key)

	// A func value is one source however often it is passed; two closures
	// are two sources.
	fn := Func(func(context.Context, *Overlapped) (int, error) { return 0, nil })
	associate(t, p1, fn, 1)
	_, err := p2.Associate(fn, 2)
	assert.ErrorIs(t, err, ErrAssociated)
	mk := func(i int) func(context.Context, *Overlapped) (int, error) {
		return func(context.Context, *Overlapped) (int, error) { return i, nil }
	}
	associate(t, p1, mk(1), 1)
	associate(t, p1, mk(2), 2)

	// Closing the handle ends the association.
	require.NoError(t, h.Close())
	h2, err := p2.Associate(server, "again")
	require.NoError(t, err)
	h2.Close()
}

func testS43(t *testing.T) {
	p := newPort(t, 1)
	client, server := tcpPair(t)
	h := associate(t, p, server, "conn")
	var ov Overlapped
	buf := make([]byte, 4)

	// Bad arguments.
	for name, err := range map[string]error{
		"nil Overlapped":      h.Read(nil, buf),
		"nil buffer":          h.Read(&ov, nil),
		"empty buffer":        h.Write(&ov, buf[:0]),
		"nil function":        h.Do(&ov, nil),
		"nil Overlapped (Do)": h.Do(nil, func(context.Context, *Overlapped) (int, error) { return 0, nil }),
	} {
		assert.ErrorIs(t, err, ErrInvalid, name)
	}
	// Operations the source does not have.
	for name, err := range map[string]error{
		"Accept on a conn":   h.Accept(&ov),
		"ReadAt on a conn":   h.ReadAt(&ov, buf),
		"ReadFrom on a conn": h.ReadFrom(&ov, buf),
		"Call on a conn":     h.Call(&ov),
	} {
		assert.ErrorIs(t, err, errors.ErrUnsupported, name)
	}
	hf := associate(t, p, tempFile(t), "file")
	ov.Offset = -1
	assert.ErrorIs(t, hf.ReadAt(&ov, buf), ErrInvalid)
	assert.ErrorIs(t, hf.WriteAt(&ov, buf), ErrInvalid)
	ov.Offset = 0
	t.Run("WriteTo without an address", func(t *testing.T) {
		hu := associate(t, p, listenUDP(t), "udp")
		assert.ErrorIs(t, hu.WriteTo(&ov, buf, nil), ErrInvalid)
	})

	// An Overlapped that is pending: the second start fails and the first
	// operation goes on undisturbed, completing once.
	require.NoError(t, h.Read(&ov, buf))
	assert.ErrorIs(t, h.Read(&ov, buf), ErrPending)
	assert.ErrorIs(t, h.Write(&ov, buf), ErrPending)
	assert.ErrorIs(t, hf.Read(&ov, buf), ErrPending)
	_, err := client.Write([]byte("ok"))
	require.NoError(t, err)
	w := p.NewWorker()
	defer w.Close()
	pkt := next(t, w)
	assert.Equal(t, Packet{Key: "conn", Bytes: 2, Overlapped: &ov}, pkt)
	assert.Equal(t, "ok", string(buf[:2]))

	// A closed handle.
	require.NoError(t, hf.Close())
	assert.ErrorIs(t, hf.Write(&ov, buf), ErrHandleClosed)
	assert.ErrorIs(t, hf.Close(), ErrHandleClosed)

	// Associate's bad input.
	_, err = p.Associate(nil, 1)
	assert.ErrorIs(t, err, ErrInvalid)
	_, err = p.Associate((*os.File)(nil), 1)
	assert.ErrorIs(t, err, ErrInvalid)
	_, err = p.Associate(42, 1)
	assert.ErrorIs(t, err, errors.ErrUnsupported)
	_, err = p.Associate(func() {}, 1)
	assert.ErrorIs(t, err, errors.ErrUnsupported)

	// A draining port, then a closed one. The packet keeps Shutdown from
	// closing the port. While it drains, new Accepts are refused, and the
	// other operations and Associate work (see Port.Shutdown).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hl := associate(t, p, ln, "listener")
	require.NoError(t, p.Post(Packet{Key: "hold"}))
	go p.Shutdown(context.Background())
	eventually(t, func() bool { return p.Post(Packet{}) == ErrClosed }, "Shutdown begins")
	posted := uint64(p.Stats().Queued)
	assert.ErrorIs(t, hl.Accept(&ov), ErrClosed)
	var draining Overlapped
	require.NoError(t, h.Read(&draining, buf), "a read while the port drains")
	hd, err := p.Associate(&bytes.Buffer{}, 1)
	require.NoError(t, err, "Associate while the port drains")
	p.Close()
	assert.ErrorIs(t, h.Read(&ov, buf), ErrClosed)
	assert.ErrorIs(t, hd.Close(), ErrHandleClosed, "Close closed it")

	// Nothing was queued by any of it, and every Overlapped is ready again.
	assert.Zero(t, p.Stats().Queued)
	eventually(t, func() bool { return p.Stats().Discarded == posted+1 }, "the posted packets and the aborted read")
	q := newPort(t, 1)
	hb := associate(t, q, &bytes.Buffer{}, "buf")
	require.NoError(t, hb.Write(&ov, []byte("ready")))
	require.NoError(t, hb.Write(&draining, []byte("ready")))
}

func testS44(t *testing.T) {
	p := newPort(t, 1)

	// aborted dequeues one packet and requires it to be ov's, aborted.
	aborted := func(t *testing.T, ov *Overlapped) Packet {
		t.Helper()
		pkt := nextOn(t, p)
		require.Same(t, ov, pkt.Overlapped)
		require.ErrorIs(t, pkt.Err, ErrAborted)
		require.ErrorIs(t, ov.Err, ErrAborted)
		return pkt
	}

	t.Run("net.Conn", func(t *testing.T) {
		client, server := tcpPair(t)
		h := associate(t, p, server, "conn")
		var ov Overlapped
		buf := make([]byte, 8)
		cancelRunning(t, h, &ov, func() error { return h.Read(&ov, buf) })
		pkt := aborted(t, &ov)
		assert.ErrorIs(t, pkt.Err, os.ErrDeadlineExceeded, "interrupted by a deadline")
		nothingQueued(t, p)
		assert.ErrorIs(t, h.Cancel(&ov), ErrNotPending)

		// The next Read is not hit by the deadline that cancelled this one.
		require.NoError(t, h.Read(&ov, buf))
		_, err := client.Write([]byte("after"))
		require.NoError(t, err)
		pkt = nextOn(t, p)
		require.NoError(t, pkt.Err)
		assert.Equal(t, "after", string(buf[:pkt.Bytes]))
	})

	t.Run("not started", func(t *testing.T) {
		client, server := tcpPair(t)
		h := associate(t, p, server, "conn")
		var first, second Overlapped
		b1, b2 := make([]byte, 8), make([]byte, 8)
		require.NoError(t, h.Read(&first, b1))
		require.NoError(t, h.Read(&second, b2))
		require.NoError(t, h.Cancel(&second))
		aborted(t, &second)
		_, err := client.Write([]byte("first"))
		require.NoError(t, err)
		pkt := nextOn(t, p)
		require.Same(t, &first, pkt.Overlapped)
		require.NoError(t, pkt.Err)
		assert.Equal(t, "first", string(b1[:pkt.Bytes]))
	})

	t.Run("finished first", func(t *testing.T) {
		h := associate(t, p, func(context.Context, *Overlapped) (int, error) { return 9, nil }, "fn")
		var ov Overlapped
		require.NoError(t, h.Call(&ov))
		eventually(t, func() bool { return p.Stats().Queued == 1 }, "the completion is queued")
		assert.ErrorIs(t, h.Cancel(&ov), ErrNotPending)
		pkt := nextOn(t, p)
		assert.NoError(t, pkt.Err)
		assert.Equal(t, 9, pkt.Bytes)
	})

	t.Run("Func watching its context", func(t *testing.T) {
		started := make(chan struct{})
		h := associate(t, p, func(ctx context.Context, _ *Overlapped) (int, error) {
			close(started)
			<-ctx.Done()
			return 0, ctx.Err()
		}, "fn")
		var ov Overlapped
		require.NoError(t, h.Call(&ov))
		<-started
		require.NoError(t, h.Cancel(&ov))
		pkt := aborted(t, &ov)
		assert.ErrorIs(t, pkt.Err, context.Canceled, "the source's error is kept behind ErrAborted")
	})

	t.Run("uninterruptible", func(t *testing.T) {
		r := &blockingReader{lines: make(chan string)}
		h := associate(t, p, r, "reader")
		var ov Overlapped
		buf := make([]byte, 8)
		cancelRunning(t, h, &ov, func() error { return h.Read(&ov, buf) })
		nothingQueued(t, p)
		r.lines <- "late"
		pkt := nextOn(t, p)
		require.NoError(t, pkt.Err, "its normal result")
		assert.Equal(t, "late", string(buf[:pkt.Bytes]))
		nothingQueued(t, p)
	})

	t.Run("listener", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		hl := associate(t, p, ln, "ln")
		var aov Overlapped
		cancelRunning(t, hl, &aov, func() error { return hl.Accept(&aov) })
		aborted(t, &aov)

		// The listener accepts again.
		require.NoError(t, hl.Accept(&aov))
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		pkt := nextOn(t, p)
		require.NoError(t, pkt.Err)
		aov.Conn.Close()
	})

	t.Run("pipe", func(t *testing.T) {
		r, wr, err := os.Pipe()
		require.NoError(t, err)
		defer wr.Close()
		if r.SetReadDeadline(time.Time{}) != nil {
			// Windows: an anonymous pipe cannot be polled, so it has no
			// deadlines and its reads are uninterruptible, the case
			// "uninterruptible" tests.
			r.Close()
			t.Skipf("os.Pipe has no deadlines on %s", runtime.GOOS)
		}
		hr := associate(t, p, r, "pipe")
		var rov Overlapped
		cancelRunning(t, hr, &rov, func() error { return hr.Read(&rov, make([]byte, 4)) })
		aborted(t, &rov)
	})

	t.Run("CancelAll", func(t *testing.T) {
		_, server := tcpPair(t)
		h := associate(t, p, server, "conn")
		assert.ErrorIs(t, h.CancelAll(), ErrNotPending)
		ovs := startThree(t, h)
		require.NoError(t, h.CancelAll())
		w := p.NewWorker()
		defer w.Close()
		abortedOnce(t, w, ovs)
		nothingQueued(t, p)
	})

	t.Run("bad input", func(t *testing.T) {
		_, server := tcpPair(t)
		h := associate(t, p, server, "conn")
		other := associate(t, p, &blockingReader{lines: make(chan string, 1)}, "other")
		assert.ErrorIs(t, h.Cancel(nil), ErrInvalid)
		var ov Overlapped
		assert.ErrorIs(t, h.Cancel(&ov), ErrNotPending)
		require.NoError(t, other.Read(&ov, make([]byte, 1)))
		assert.ErrorIs(t, h.Cancel(&ov), ErrNotPending, "pending on another handle")
		other.Source().(*blockingReader).lines <- "x"
		require.NoError(t, nextOn(t, p).Err)
	})
}

// untilCancelled is a Func that runs until its context ends.
func untilCancelled(ctx context.Context, _ *Overlapped) (int, error) {
	<-ctx.Done()
	return 0, ctx.Err()
}

// startThree starts two reads and a function on h, none of which ends
// until it is cancelled: the second read has not started, the first and
// the function run.
func startThree(t *testing.T, h *Handle) []Overlapped {
	t.Helper()
	ovs := make([]Overlapped, 3)
	require.NoError(t, h.Read(&ovs[0], make([]byte, 1)))
	require.NoError(t, h.Read(&ovs[1], make([]byte, 1)))
	require.NoError(t, h.Do(&ovs[2], untilCancelled))
	return ovs
}

// abortedOnce dequeues a packet for each of ovs and requires each to be
// aborted, exactly once.
func abortedOnce(t *testing.T, w *Worker, ovs []Overlapped) {
	t.Helper()
	seen := map[*Overlapped]int{}
	for range ovs {
		pkt := next(t, w)
		require.ErrorIs(t, pkt.Err, ErrAborted)
		seen[pkt.Overlapped]++
	}
	want := map[*Overlapped]int{}
	for i := range ovs {
		want[&ovs[i]] = 1
	}
	assert.Equal(t, want, seen)
}

func testS45(t *testing.T) {
	t.Run("Handle.Close", func(t *testing.T) {
		p := newPort(t, 1)
		w := p.NewWorker()
		defer w.Close()
		client, server := tcpPair(t)
		h := associate(t, p, server, "conn")
		ovs := startThree(t, h)
		require.NoError(t, h.Close())
		abortedOnce(t, w, ovs)
		nothingQueued(t, p)

		// The source is closed, and its association ended: it may be associated again.
		_, err := client.Read(make([]byte, 1))
		assert.ErrorIs(t, err, io.EOF, "the peer sees the connection closed")
		h2, err := p.Associate(server, "again")
		require.NoError(t, err)
		h2.Close()
	})

	t.Run("Port.Close", func(t *testing.T) {
		base := runtime.NumGoroutine()
		p := newPort(t, 1)
		var hs []*Handle
		ovs := make([]Overlapped, 4)
		for i := range 2 {
			_, server := tcpPair(t)
			h, err := p.Associate(server, i)
			require.NoError(t, err)
			hs = append(hs, h)
			require.NoError(t, h.Read(&ovs[2*i], make([]byte, 1)))
			require.NoError(t, h.Read(&ovs[2*i+1], make([]byte, 1)))
		}
		require.NoError(t, p.Close())
		// Every operation ended; its packet has nowhere to go and is
		// counted as discarded.
		eventually(t, func() bool { return p.Stats().Discarded == 4 }, "4 completions discarded, got %d", p.Stats().Discarded)
		for _, h := range hs {
			assert.ErrorIs(t, h.Close(), ErrHandleClosed, "Port.Close closed it")
		}
		for i := range ovs {
			assert.ErrorIs(t, hs[0].Cancel(&ovs[i]), ErrNotPending)
		}
		eventually(t, func() bool { return runtime.NumGoroutine() <= base },
			"the port holds no goroutine (base %d, now %d)", base, runtime.NumGoroutine())
	})
}

// TestOperationsExactlyOnce starts operations from many goroutines on
// handles that are cancelled and closed at random, and counts that every
// operation whose start returned nil completes with exactly one packet.
func TestOperationsExactlyOnce(t *testing.T) {
	handles, opsPer := 8, 400
	if testing.Short() {
		handles, opsPer = 4, 100
	}
	p := newPort(t, 2)
	var (
		mu      sync.Mutex
		started = map[*Overlapped]int{}
	)
	var wg sync.WaitGroup
	for i := range handles {
		h, err := p.Associate(func(ctx context.Context, ov *Overlapped) (int, error) {
			if ov.Value.(int)%3 == i%3 { // i: a closure of its own
				select {
				case <-ctx.Done():
					return 0, ctx.Err()
				case <-time.After(time.Millisecond):
				}
			}
			return 1, nil
		}, i)
		require.NoError(t, err)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 1))
			closeAt := opsPer/2 + r.IntN(opsPer)
			for j := range opsPer {
				ov := &Overlapped{Value: j}
				if err := h.Call(ov); err != nil {
					assert.ErrorIs(t, err, ErrHandleClosed)
					continue
				}
				mu.Lock()
				started[ov]++
				mu.Unlock()
				switch r.IntN(10) {
				case 0:
					h.Cancel(ov)
				case 1:
					h.CancelAll()
				}
				if j == closeAt {
					h.Close()
				}
			}
			h.Close()
		}()
	}
	got := map[*Overlapped]int{}
	var gotMu sync.Mutex
	var workers sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	for range 4 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			w := p.NewWorker()
			defer w.Close()
			for {
				pkt, err := w.Get(ctx)
				if err != nil {
					return
				}
				if pkt.Err != nil {
					assert.ErrorIs(t, pkt.Err, ErrAborted)
				}
				gotMu.Lock()
				got[pkt.Overlapped]++
				gotMu.Unlock()
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	want := len(started)
	mu.Unlock()
	eventually(t, func() bool {
		gotMu.Lock()
		defer gotMu.Unlock()
		return len(got) == want
	}, "every started operation completes")
	cancel()
	workers.Wait()
	for ov, c := range got {
		require.Equal(t, 1, c, "packets for one operation")
		require.Equal(t, 1, started[ov], "a packet for an operation that started")
	}
	assert.Zero(t, p.Stats().Discarded)
}
