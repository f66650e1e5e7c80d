package main

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/iocp-go/iocp"
)

// bufSize is each connection's buffer: one read, echoed by one write.
const bufSize = 4 << 10

// portServer is an echo server on a completion port: the listener and
// every connection are bound to one pool, whose workers run their
// callbacks for all their completions.
type portServer struct {
	pool     *iocp.Pool
	ln       *iocp.Handle
	acceptOv iocp.Overlapped

	inFlight, maxInFlight atomic.Int64 // callbacks running now, and at most
}

// conn is a connection's state. It has one operation pending at a time,
// so only the worker that runs its callback touches it.
type conn struct {
	h       *iocp.Handle
	ov      iocp.Overlapped
	buf     []byte
	reading bool
}

// startPortServer serves ln with a pool of workers on a port of the given
// concurrency.
func startPortServer(ln net.Listener, concurrency, workers int) (*portServer, error) {
	port, err := iocp.NewPort(concurrency, iocp.WithName("echo"))
	if err != nil {
		return nil, err
	}
	s := &portServer{}
	// Every completion comes from a bound source; nothing is posted.
	s.pool, err = port.NewPool(workers, func(context.Context, iocp.Packet) {})
	if err != nil {
		port.Close()
		return nil, err
	}
	if s.ln, err = s.pool.Bind(ln, s.counted(s.accepted)); err == nil {
		err = s.ln.Accept(&s.acceptOv)
	}
	if err != nil {
		s.pool.Close()
		return nil, err
	}
	return s, nil
}

// counted wraps a callback to keep count of how many run at once.
func (s *portServer) counted(fn iocp.Handler) iocp.Handler {
	return func(ctx context.Context, pkt iocp.Packet) {
		n := s.inFlight.Add(1)
		for m := s.maxInFlight.Load(); n > m && !s.maxInFlight.CompareAndSwap(m, n); m = s.maxInFlight.Load() {
		}
		fn(ctx, pkt)
		s.inFlight.Add(-1)
	}
}

// accepted binds a new connection, starts reading it, and accepts the
// next one.
func (s *portServer) accepted(_ context.Context, pkt iocp.Packet) {
	if errors.Is(pkt.Err, iocp.ErrAborted) {
		return // the listener is closing
	}
	if pkt.Err == nil {
		c := &conn{buf: make([]byte, bufSize), reading: true}
		h, err := s.pool.Bind(s.acceptOv.Conn, s.counted(c.completed))
		if err == nil {
			c.h = h
			if c.h.Read(&c.ov, c.buf) != nil {
				h.Close()
			}
		} else {
			s.acceptOv.Conn.Close()
		}
	}
	s.ln.Accept(&s.acceptOv) // fails only once the port or listener closes
}

// completed echoes what a read brought, and reads again once it is
// written. The state changes before the next operation starts: its
// completion may be dequeued by another worker before the call returns.
func (c *conn) completed(_ context.Context, pkt iocp.Packet) {
	if pkt.Err != nil || pkt.Bytes == 0 {
		c.h.Close() // io.EOF, the peer went away, or an abort
		return
	}
	wasReading := c.reading
	c.reading = !wasReading
	var err error
	if wasReading {
		err = c.h.Write(&c.ov, c.buf[:pkt.Bytes])
	} else {
		err = c.h.Read(&c.ov, c.buf)
	}
	if err != nil {
		c.h.Close()
	}
}

// Close closes the port, which closes the listener and every connection,
// and waits for the workers to return.
func (s *portServer) Close() { s.pool.Close() }

// goServer is the echo server Go programs usually write: a goroutine per
// connection.
type goServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startGoServer(ln net.Listener) *goServer {
	s := &goServer{ln: ln, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go s.serve(c)
		}
	}()
	return s
}

func (s *goServer) serve(c net.Conn) {
	defer s.wg.Done()
	buf := make([]byte, bufSize)
	for {
		n, err := c.Read(buf)
		if err != nil {
			break
		}
		if _, err := c.Write(buf[:n]); err != nil {
			break
		}
	}
	c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Close closes the listener and every connection and waits for their
// goroutines.
func (s *goServer) Close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// server is either kind.
type server interface{ Close() }

// dialAll opens n connections to addr.
func dialAll(addr string, n int) ([]net.Conn, error) {
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			closeAll(conns)
			return nil, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// load sends requests of size bytes on every connection, one at a time
// per connection, and waits for each echo. Each connection runs until
// more() says stop; it returns every request's latency in nanoseconds.
func load(conns []net.Conn, size int, more func() bool, now func() int64) ([]int64, error) {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		all      []int64
		firstErr error
	)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := make([]byte, size)
			resp := make([]byte, size)
			var lat []int64
			var err error
			for more() {
				start := now()
				if _, err = c.Write(req); err != nil {
					break
				}
				if _, err = io.ReadFull(c, resp); err != nil {
					break
				}
				lat = append(lat, now()-start)
			}
			mu.Lock()
			all = append(all, lat...)
			if err != nil && firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return all, firstErr
}
