package iocp

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tapConn records what the library asks of a connection: every byte that
// each Write wrote and each Read read, in the order the socket moved
// them, and per buffer how many. It hides the socket's raw connection, so
// every write goes through a lane.
type tapConn struct {
	net.Conn
	mu  sync.Mutex
	log []byte           // the stream, as the socket moved it
	n   map[*byte]int    // bytes moved per operation buffer
	ops map[*byte]opKind // which operation the buffer was given to
	seg map[*byte][2]int // where in log the buffer's bytes are
	dup map[*byte]bool   // a buffer given twice: a duplicated operation
}

func newTap(c net.Conn) *tapConn {
	return &tapConn{Conn: c, n: map[*byte]int{}, ops: map[*byte]opKind{}, seg: map[*byte][2]int{}, dup: map[*byte]bool{}}
}

func (c *tapConn) record(op opKind, b []byte, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := unsafe.SliceData(b)
	if _, ok := c.ops[k]; ok {
		c.dup[k] = true
	}
	c.ops[k] = op
	c.n[k] = n
	c.seg[k] = [2]int{len(c.log), len(c.log) + n}
	c.log = append(c.log, b[:n]...)
}

func (c *tapConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.record(opRead, b, n)
	return n, err
}

func (c *tapConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.record(opWrite, b, n)
	return n, err
}

// TestStreamOperationsExactlyOnce queues several Reads and Writes per
// lane on TCP pairs while Cancel, CancelAll, Handle.Close and Port.Close
// race them at random. Every operation whose start returned nil completes
// exactly once: dequeued once with the bytes the socket moved, or
// discarded by Port.Close and counted. The bytes read are a prefix of the
// bytes written, none lost between them or twice, each read packet
// carries what its socket read gave it, and no goroutine is left
// (TestMain's goleak).
func TestStreamOperationsExactlyOnce(t *testing.T) {
	rounds, opsPer := 30, 200
	if testing.Short() {
		rounds, opsPer = 6, 50
	}
	for round := range rounds {
		streamRound(t, round, opsPer)
	}
}

type streamOp struct {
	ov  *Overlapped
	buf []byte
	tap *tapConn
}

func streamRound(t *testing.T, round, opsPer int) {
	const pairs = 3
	r := rand.New(rand.NewPCG(uint64(round), 3))
	p := newPort(t, 2)

	var mu sync.Mutex
	var started []streamOp
	got := map[*Overlapped]Packet{}
	twice := 0

	var workers sync.WaitGroup
	for range 4 {
		workers.Go(func() {
			w := p.NewWorker()
			defer w.Close()
			for {
				pkt, err := w.Get(context.Background())
				if err != nil {
					assert.ErrorIs(t, err, ErrClosed)
					return
				}
				mu.Lock()
				if _, ok := got[pkt.Overlapped]; ok {
					twice++
				}
				got[pkt.Overlapped] = pkt
				mu.Unlock()
			}
		})
	}

	taps := make([][2]*tapConn, pairs)
	var issuers sync.WaitGroup
	for i := range pairs {
		client, server := tcpPair(t)
		wt, rt := newTap(client), newTap(server)
		taps[i] = [2]*tapConn{wt, rt}
		hw, err := p.Associate(wt, "w")
		require.NoError(t, err)
		hr, err := p.Associate(rt, "r")
		require.NoError(t, err)
		seed := r.Uint64()
		issuers.Go(func() {
			r := rand.New(rand.NewPCG(seed, 4))
			var mine []*Overlapped
			var next byte
			for j := range opsPer {
				for _, side := range [2]*Handle{hw, hr} {
					ov := &Overlapped{}
					buf := make([]byte, 1+r.IntN(64))
					var err error
					if side == hw {
						for k := range buf {
							buf[k] = next
							next++
						}
						err = side.Write(ov, buf)
					} else {
						err = side.Read(ov, buf)
					}
					if err != nil {
						if !errors.Is(err, ErrHandleClosed) {
							assert.ErrorIs(t, err, ErrClosed, "round %d", round)
						}
						continue
					}
					tap := wt
					if side == hr {
						tap = rt
					}
					mu.Lock()
					started = append(started, streamOp{ov, buf, tap})
					mu.Unlock()
					mine = append(mine, ov)
				}
				if len(mine) == 0 {
					continue
				}
				switch x := r.IntN(100); {
				case x < 10:
					hr.Cancel(mine[r.IntN(len(mine))]) // ErrNotPending if done
				case x < 15:
					hw.Cancel(mine[r.IntN(len(mine))])
				case x < 17:
					hr.CancelAll()
				case x < 19:
					hw.CancelAll()
				case x == 19 && j > opsPer/2:
					hw.Close()
				case x == 20 && j > opsPer/2:
					hr.Close()
				}
			}
			hw.Close() // the reads then end: the peer closed
		})
	}
	if round%2 == 0 {
		// Port.Close races the issuers.
		for range r.IntN(200) {
			runtime.Gosched()
		}
		require.NoError(t, p.Close())
	}
	issuers.Wait()
	if round%2 == 1 {
		// Every read ends once the peer is closed; then the port closes
		// with nothing left in flight, and discards nothing.
		eventually(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(got) == len(started)
		}, "round %d: every operation completes", round)
		require.NoError(t, p.Close())
	}
	workers.Wait()

	// Every operation is over: its Overlapped is ready again, and its
	// goroutine gone.
	mu.Lock()
	defer mu.Unlock()
	for _, op := range started {
		eventually(t, func() bool { return op.ov.o.state.Load() == ovReady }, "round %d: an operation still pending", round)
	}
	// A discarded completion makes its Overlapped ready, then is counted: wait
	// for the count too.
	counted := func() bool { return len(got)+int(p.Stats().Discarded) == len(started) }
	for deadline := time.Now().Add(patience); !counted() && time.Now().Before(deadline); {
		time.Sleep(100 * time.Microsecond)
	}
	assert.Zero(t, twice, "round %d: packets dequeued twice", round)
	assert.Equal(t, len(started), len(got)+int(p.Stats().Discarded),
		"round %d: started = dequeued + discarded (%d dequeued)", round, len(got))
	if round%2 == 1 {
		assert.Zero(t, p.Stats().Discarded)
	}
	aborted := 0
	for _, pkt := range got {
		aborted += btoi(isAborted(pkt.Err))
	}
	t.Logf("round %d: %d started, %d dequeued (%d aborted), %d discarded", round, len(started), len(got), aborted, p.Stats().Discarded)

	for _, tp := range taps {
		wt, rt := tp[0], tp[1]
		wt.mu.Lock()
		rt.mu.Lock()
		assert.True(t, bytes.HasPrefix(wt.log, rt.log),
			"round %d: the bytes read (%d) are a prefix of the bytes written (%d)", round, len(rt.log), len(wt.log))
		assert.Empty(t, wt.dup, "a write given to the socket twice")
		assert.Empty(t, rt.dup, "a read given to the socket twice")
		rt.mu.Unlock()
		wt.mu.Unlock()
	}
	for _, op := range started {
		pkt, ok := got[op.ov]
		if !ok {
			continue // discarded by Port.Close
		}
		k := unsafe.SliceData(op.buf)
		op.tap.mu.Lock()
		n, ran := op.tap.n[k]
		seg := op.tap.seg[k]
		op.tap.mu.Unlock()
		if !ran {
			// Aborted before it started: no byte moved.
			assert.True(t, isAborted(pkt.Err), "round %d: an operation that never ran ended with %v", round, pkt.Err)
			assert.Zero(t, pkt.Bytes)
			continue
		}
		assert.Equal(t, n, pkt.Bytes, "round %d: the packet carries what the socket moved", round)
		assert.True(t, bytes.Equal(op.tap.log[seg[0]:seg[1]], op.buf[:n]), "round %d: the buffer holds its bytes of the stream", round)
	}
}

func isAborted(err error) bool { return err != nil && errors.Is(err, ErrAborted) }
