package iocp

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPoolShutdownGraceful: Pool.Shutdown is graceful for servers. It
// refuses Posts and Accepts and aborts the Accept pending; a handler in
// flight still writes its response on its connection; the connection's
// read, which waits on the peer, is aborted once the port is quiet, and
// its packet reaches the connection's callback before Shutdown returns.
func TestPoolShutdownGraceful(t *testing.T) {
	p := newPort(t, 2)
	proceed, entered := make(chan struct{}), make(chan struct{})
	wrote := make(chan error, 1)
	var conn *Handle
	pl := newPool(t, p, 4, func(ctx context.Context, pkt Packet) {
		if pkt.Key != "request" {
			return // a probe posted before Shutdown began
		}
		close(entered)
		select {
		case <-proceed:
		case <-ctx.Done(): // the test failed, and its cleanup closes the pool
			return
		}
		wrote <- conn.Write(&Overlapped{}, []byte("bye")) // a handler in flight answers
	})

	client, server := tcpPair(t)
	cleanup := make(chan error, 1) // what the connection's callback saw last
	var err error
	conn, err = pl.Bind(server, func(_ context.Context, pkt Packet) {
		if pkt.Err != nil { // per-connection cleanup
			cleanup <- pkt.Err
		}
	})
	require.NoError(t, err)
	var read Overlapped
	require.NoError(t, conn.Read(&read, make([]byte, 16)))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	accepted := make(chan Packet, 1)
	lh, err := pl.Bind(ln, func(_ context.Context, pkt Packet) { accepted <- pkt })
	require.NoError(t, err)
	require.NoError(t, lh.Accept(&Overlapped{}))

	require.NoError(t, p.Post(Packet{Key: "request"}))
	<-entered
	done := make(chan error, 1)
	go func() { done <- pl.Shutdown(context.Background()) }()
	eventually(t, func() bool { return p.Post(Packet{}) == ErrClosed }, "Shutdown refuses Posts")

	// The listener is closed to new connections, as http.Server's are.
	acc := recv(t, accepted)
	assert.ErrorIs(t, acc.Err, ErrAborted, "the pending Accept is aborted")
	assert.ErrorIs(t, lh.Accept(&Overlapped{}), ErrClosed, "a new Accept is refused")

	// The handler in flight writes its response, and the client gets it.
	close(proceed)
	require.NoError(t, recv(t, wrote), "a Write from a handler in flight")
	got := make([]byte, 3)
	_, err = io.ReadFull(client, got)
	require.NoError(t, err)
	assert.Equal(t, "bye", string(got))

	require.NoError(t, recv(t, done))
	select {
	case err := <-cleanup:
		assert.ErrorIs(t, err, ErrAborted, "the read waiting on the peer was aborted")
	default:
		t.Error("Shutdown returned before the aborted read reached its callback")
	}
	assert.Zero(t, p.Stats().Discarded, "nothing dropped")
	assert.ErrorIs(t, conn.Read(&read, make([]byte, 1)), ErrClosed)
}

// TestPoolShutdownWaitsForWrites: a write pending on a handle holds the
// drain; a read does not.
func TestPoolShutdownWaitsForWrites(t *testing.T) {
	p := newPort(t, 1)
	pl := newPool(t, p, 2, func(context.Context, Packet) {})
	proceed := make(chan struct{})
	completed := make(chan Packet, 2)
	h, err := pl.Bind(Func(func(ctx context.Context, _ *Overlapped) (int, error) {
		<-proceed // a slow operation that completes by itself
		return 1, nil
	}), func(_ context.Context, pkt Packet) { completed <- pkt })
	require.NoError(t, err)
	require.NoError(t, h.Call(&Overlapped{}))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pl.Shutdown(ctx) }()
	eventually(t, func() bool { return p.Post(Packet{}) == ErrClosed }, "Shutdown begins")
	assert.Empty(t, done, "the function is pending")
	cancel()
	require.ErrorIs(t, recv(t, done), context.Canceled)

	close(proceed)
	require.NoError(t, pl.Shutdown(context.Background()))
	pkt := recv(t, completed)
	require.NoError(t, pkt.Err)
	assert.Equal(t, 1, pkt.Bytes, "completed, not aborted")
}

// TestPoolCloseDeliversAborts: Pool.Close discards the posted packets
// still queued, but the aborted operations' packets reach their callbacks
// before it returns.
func TestPoolCloseDeliversAborts(t *testing.T) {
	kernelScheduled(t) // one slot held: the posted packets stay queued
	p := newPort(t, 1)
	entered := make(chan struct{})
	pl, err := p.NewPool(2, func(ctx context.Context, pkt Packet) {
		if pkt.Key == "holds the slot" {
			close(entered)
			<-ctx.Done()
		}
	})
	require.NoError(t, err)
	_, server := tcpPair(t)
	cleanup := make(chan error, 1)
	conn, err := pl.Bind(server, func(_ context.Context, pkt Packet) { cleanup <- pkt.Err })
	require.NoError(t, err)
	require.NoError(t, conn.Read(&Overlapped{}, make([]byte, 16)))
	post(t, p, "holds the slot")
	<-entered
	post(t, p, "queued 1", "queued 2")

	require.NoError(t, pl.Close())
	select {
	case err := <-cleanup:
		assert.True(t, errors.Is(err, ErrAborted), "got %v", err)
	default:
		t.Error("Close returned before the aborted read reached its callback")
	}
	assert.Equal(t, uint64(2), p.Stats().Discarded, "the posted packets")
}
