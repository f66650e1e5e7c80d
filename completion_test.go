package iocp

// The statements about completions: a packet comes out as it went in (S3),
// an operation completes with one packet whose result reaches its
// Overlapped at the dequeue (S42), possibly before the call that started it
// returns (S46), and the caller's state travels with the Overlapped (S47).
// TestSpec (port_test.go) runs them, S42-S47 through associateSpec.

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func testS3(t *testing.T) {
	ov := &Overlapped{Value: "state"}
	errIO := errors.New("io failed")
	type keyStruct struct{ a, b int }
	for i, pkt := range []Packet{
		{},
		{Key: 7, Bytes: 1, Overlapped: ov, Err: errIO},
		{Key: "k", Bytes: -1},
		{Key: keyStruct{1, 2}, Bytes: 1 << 40},
		{Key: ov, Overlapped: ov},
		{Key: nil, Err: context.Canceled},
	} {
		p := newPort(t, 1)
		require.NoError(t, p.Post(pkt))
		got, err := p.NewWorker().Get(context.Background())
		require.NoError(t, err)
		assert.Equal(t, pkt.Key, got.Key, "packet %d", i)
		assert.Equal(t, pkt.Bytes, got.Bytes, "packet %d", i)
		assert.Same(t, pkt.Overlapped, got.Overlapped, "packet %d", i)
		assert.Equal(t, pkt.Err, got.Err, "packet %d", i)
	}
}

func testS42(t *testing.T) {
	p := newPort(t, 1)
	w := p.NewWorker()
	errOp := errors.New("op failed")
	h := associate(t, p, func(context.Context, *Overlapped) (int, error) { return 3, errOp }, "k")
	ov := Overlapped{Value: "state"}
	require.NoError(t, h.Call(&ov))

	// Completed and queued, not dequeued: the results are not there yet.
	eventually(t, func() bool { return p.Stats().Queued == 1 }, "the completion is queued")
	assert.Zero(t, ov.Bytes)
	assert.NoError(t, ov.Err)

	pkt := next(t, w)
	assert.Equal(t, Packet{Key: "k", Bytes: 3, Overlapped: &ov, Err: errOp}, pkt)
	assert.Equal(t, 3, ov.Bytes)
	assert.Same(t, errOp, ov.Err)
	assert.Equal(t, "state", ov.Value)
	_, ok := w.TryGet()
	assert.False(t, ok, "exactly one packet")
	require.NoError(t, w.Close()) // the subtest's goroutine takes the slot

	t.Run("ReadFrom's address", func(t *testing.T) {
		a := listenUDP(t)
		hu := associate(t, p, a, "udp")
		var rov Overlapped
		require.NoError(t, hu.ReadFrom(&rov, make([]byte, 8)))
		b, err := net.Dial("udp", a.LocalAddr().String())
		require.NoError(t, err)
		defer b.Close()
		_, err = b.Write([]byte("x"))
		require.NoError(t, err)
		eventually(t, func() bool { return p.Stats().Queued == 1 }, "the completion is queued")
		assert.Nil(t, rov.Addr, "arrives with the dequeue too")
		nextOn(t, p)
		assert.Equal(t, b.LocalAddr().String(), rov.Addr.String())
	})
}

func testS46(t *testing.T) {
	p := newPort(t, 1)
	h := associate(t, p, func(_ context.Context, ov *Overlapped) (int, error) {
		return len(ov.Value.(string)), nil
	}, "fn")

	// The hook holds Call inside, after the operation started, until a
	// worker has dequeued its completion.
	dequeued := make(chan Packet, 1)
	testHookStarted = func() {
		select {
		case pkt := <-dequeued:
			dequeued <- pkt
		case <-time.After(patience):
			t.Error("the completion was not dequeued while Call ran")
		}
	}
	defer func() { testHookStarted = nil }()
	go func() {
		w := p.NewWorker()
		defer w.Close()
		pkt, _ := w.Get(context.Background())
		dequeued <- pkt
	}()
	ov := Overlapped{Value: "set before the start"}
	require.NoError(t, h.Call(&ov))
	pkt := <-dequeued
	assert.Same(t, &ov, pkt.Overlapped)
	assert.Equal(t, len("set before the start"), pkt.Bytes)
}

func testS47(t *testing.T) {
	type request struct{ id int }
	p := newPort(t, 2)
	h := associate(t, p, func(_ context.Context, ov *Overlapped) (int, error) {
		return ov.Value.(*request).id, nil
	}, "fn")
	n := 500
	if testing.Short() {
		n = 100
	}
	ovs := make([]Overlapped, n)
	for i := range ovs {
		ovs[i].Value = &request{id: i}
		require.NoError(t, h.Call(&ovs[i]))
	}
	w := p.NewWorker()
	defer w.Close()
	seen := make([]int, n)
	for range n {
		pkt := next(t, w)
		req := pkt.Overlapped.Value.(*request) // no map, no unsafe
		require.Equal(t, req.id, pkt.Bytes, "the packet carries its own operation's state")
		seen[req.id]++
	}
	for i, c := range seen {
		require.Equal(t, 1, c, "request %d", i)
	}
}
