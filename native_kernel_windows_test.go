package iocp

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/windows"
)

func newKernel(t *testing.T, concurrency int) *kernelPort {
	t.Helper()
	k, err := newKernelPort(concurrency)
	require.NoError(t, err)
	t.Cleanup(func() { k.close() })
	return k
}

func TestKernelPort(t *testing.T) {
	boom := errors.New("boom")
	ov := new(Overlapped)
	pkts := []Packet{
		{Key: "a", Bytes: 1},
		{Key: 2, Bytes: 1 << 20, Overlapped: ov, Err: boom},
		{},
	}

	t.Run("FIFO", func(t *testing.T) {
		k := newKernel(t, 1)
		for i := range pkts {
			require.NoError(t, k.post(&pkts[i], 0))
		}
		for i := range pkts {
			var got [1]Packet
			n, err := k.get(got[:], windows.INFINITE, false)
			require.NoError(t, err)
			require.Equal(t, 1, n)
			assert.Equal(t, pkts[i], got[0], "packet %d unchanged, in order", i)
		}
		_, err := k.get(make([]Packet, 1), 0, false)
		assert.ErrorIs(t, err, errTimeout)
	})

	t.Run("Batch", func(t *testing.T) {
		if getQueuedCompletionStatusEx.Find() != nil {
			t.Skip("no GetQueuedCompletionStatusEx in this kernel32")
		}
		k := newKernel(t, 1)
		for i := range pkts {
			require.NoError(t, k.post(&pkts[i], 0))
		}
		got := make([]Packet, 8)
		n, err := k.get(got, windows.INFINITE, false)
		require.NoError(t, err)
		assert.Equal(t, pkts, got[:n], "all queued, oldest first, at once")
		_, err = k.get(got, 0, false)
		assert.ErrorIs(t, err, errTimeout)
	})

	t.Run("CloseWakesWaiters", func(t *testing.T) {
		if underWine() {
			// Windows returns ERROR_ABANDONED_WAIT_0 to the waiters of a
			// port whose handle is closed; Wine 8 leaves them waiting.
			// Port.Close does not rely on it: it interrupts every waiting
			// thread with an APC first (native_windows.go).
			t.Skip("Wine: closing a completion port does not wake its waiters")
		}
		k, err := newKernelPort(1)
		require.NoError(t, err)
		out := make(chan error, 1)
		go func() {
			_, err := k.get(make([]Packet, 1), windows.INFINITE, false)
			out <- err
		}()
		time.Sleep(50 * time.Millisecond) // let it wait; if not, it finds the handle closed
		require.NoError(t, k.close())
		select {
		case err := <-out:
			assert.ErrorIs(t, err, ErrClosed)
		case <-time.After(patience):
			t.Fatal("the waiter was not woken")
		}
	})
}
