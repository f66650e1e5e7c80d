package iocp

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// What is the native backend's own: the rest of the suite runs on it with
// -native.

func newNativePort(t *testing.T, concurrency int) *Port {
	t.Helper()
	p, err := NewPort(concurrency, WithNative())
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

func TestNativeWorkerKeepsItsGoroutine(t *testing.T) {
	p := newNativePort(t, 2)
	post(t, p, 1)
	w := p.NewWorker()
	bound, misused, misused2 := make(chan struct{}), make(chan struct{}), make(chan struct{})
	closed, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		_, ok := w.TryGet() // binds w to this goroutine's thread
		assert.True(t, ok)
		close(bound)
		<-misused
		_, ok = w.TryGet()
		assert.False(t, ok, "the misuse left w as it was: running, nothing queued")
		close(misused2)
		<-closed
		_, ok = w.TryGet()
		assert.False(t, ok, "closed by another goroutine")
		assert.ErrorIs(t, w.Close(), ErrClosed, "its own goroutine unbinds it")
	}()
	<-bound
	requirePanic(t, func() { w.TryGet() })
	requirePanic(t, func() { w.Get(context.Background()) })
	close(misused)
	<-misused2
	assert.NoError(t, w.Close(), "any goroutine may close it")
	assert.Equal(t, 0, p.Stats().Running)
	close(closed)
	<-done
}

func TestNativeCloseInterruptsGet(t *testing.T) {
	p := newNativePort(t, 2)
	w := p.NewWorker()
	out := make(chan error, 1)
	go func() {
		_, err := w.Get(context.Background())
		out <- err
	}()
	eventually(t, func() bool { return p.Stats().Waiting == 1 }, "Get waits")
	require.NoError(t, w.Close())
	assert.ErrorIs(t, recv(t, out), ErrClosed)
	st := p.Stats()
	assert.Equal(t, 0, st.Waiting)
	assert.Equal(t, 0, st.Running)
	// The port goes on serving other workers.
	post(t, p, "after")
	pkt, err := p.Get(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "after", pkt.Key)
}

func TestNativeCloseInterruptsEveryWait(t *testing.T) {
	// More waiters than the concurrency value: on Windows the kernel
	// would not release them all with packets; Close reaches each thread.
	p := newNativePort(t, 1)
	outs := make(chan error, 4)
	for range 4 {
		go func() {
			w := p.NewWorker()
			defer w.Close()
			_, err := w.Get(context.Background())
			outs <- err
		}()
	}
	eventually(t, func() bool { return p.Stats().Waiting == 4 }, "four waiters")
	post(t, p, 1)
	require.NoError(t, p.Close())
	closed := 0
	for range 4 {
		if err := <-outs; err != nil {
			assert.ErrorIs(t, err, ErrClosed)
			closed++
		}
	}
	assert.GreaterOrEqual(t, closed, 3, "the packet went to one waiter at most")
	st := p.Stats()
	assert.Equal(t, 0, st.Waiting)
	assert.Equal(t, 0, st.Queued)
	assert.Equal(t, uint64(1), uint64(4-closed)+st.Discarded, "the packet was taken once, or discarded")
}
