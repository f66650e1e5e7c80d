package iocp

// TestMain, the helpers the tests share (patience, eventually, newPort,
// park, post), and TestSpec: the port's own statements, S1 to S39, and
// those of the other files' (completion_test.go, handle_test.go) run
// under its name.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// patience bounds every wait for something that must happen. It is long:
// tests never depend on how fast the machine is, only on whether the thing
// happens at all.
const patience = 30 * time.Second

// eventually polls cond until it holds or patience runs out.
func eventually(t *testing.T, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: "+format, args...)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func newPort(t *testing.T, concurrency int, opts ...Option) *Port {
	t.Helper()
	p, err := NewPort(concurrency, portOptions(opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

// result is what a background Get returned.
type result struct {
	pkt Packet
	err error
}

// waiter is a worker whose goroutine is parked in Get.
type waiter struct {
	w   *Worker
	out chan result
}

// park starts a goroutine that calls w.Get once, and returns when the port
// counts one more waiter, so that waiters park in a known order.
func park(t *testing.T, p *Port, w *Worker) waiter {
	t.Helper()
	before := p.Stats().Waiting
	out := make(chan result, 1)
	go func() {
		pkt, err := w.Get(context.Background())
		out <- result{pkt, err}
	}()
	eventually(t, func() bool { return p.Stats().Waiting == before+1 }, "waiter %d parks", before+1)
	return waiter{w, out}
}

// parkN parks n new workers, oldest first.
func parkN(t *testing.T, p *Port, n int) []waiter {
	ws := make([]waiter, n)
	for i := range ws {
		ws[i] = park(t, p, p.NewWorker())
	}
	return ws
}

func (w waiter) result(t *testing.T) result {
	t.Helper()
	select {
	case r := <-w.out:
		return r
	case <-time.After(patience):
		t.Fatal("waiter never returned")
		return result{}
	}
}

// stillWaiting reports whether w has not returned.
func (w waiter) stillWaiting() bool { return len(w.out) == 0 }

// runningWorker returns a worker counted as running: it has taken one packet.
func runningWorker(t *testing.T, p *Port) *Worker {
	t.Helper()
	require.NoError(t, p.Post(Packet{Key: "warm-up"}))
	w := p.NewWorker()
	pkt, ok := w.TryGet()
	require.True(t, ok, "a free slot and a queued packet")
	require.Equal(t, "warm-up", pkt.Key)
	return w
}

func post(t *testing.T, p *Port, keys ...any) {
	t.Helper()
	for _, k := range keys {
		require.NoError(t, p.Post(Packet{Key: k}))
	}
}

// requirePanic runs fn and requires a panic whose message starts with
// "iocp: ".
func requirePanic(t *testing.T, fn func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		require.NotNil(t, r, "no panic")
		msg := fmt.Sprint(r)
		require.True(t, strings.HasPrefix(msg, "iocp: "), "panic message %q", msg)
	}()
	fn()
}

func TestSpec(t *testing.T) {
	t.Run("S1_Concurrency", func(t *testing.T) {
		p := newPort(t, 0)
		assert.Equal(t, runtime.GOMAXPROCS(0), p.Concurrency())
		assert.Equal(t, runtime.GOMAXPROCS(0), p.Stats().Concurrency)
		for _, n := range []int{1, 3, 64, 1000} {
			p := newPort(t, n)
			assert.Equal(t, n, p.Concurrency())
			assert.Equal(t, n, p.Stats().Concurrency)
		}
	})

	t.Run("S2_InvalidArguments", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			c    int
			opts []Option
			want string
		}{
			{"negative concurrency", -1, nil, "concurrency -1"},
			{"huge concurrency", 1 << 40, nil, "out of range"},
			{"zero queue limit", 1, []Option{WithQueueLimit(0)}, "queue limit 0"},
			{"negative queue limit", 1, []Option{WithQueueLimit(-3)}, "queue limit -3"},
			{"huge queue limit", 1, []Option{WithQueueLimit(1 << 30)}, "out of range"},
			{"nil option", 1, []Option{nil}, "nil Option"},
			{"follow GOMAXPROCS with a fixed concurrency", 2, []Option{FollowGOMAXPROCS()}, "needs 0"},
			{"empty name", 1, []Option{WithName("")}, "empty name"},
			{"follow GOMAXPROCS natively", 0, []Option{FollowGOMAXPROCS(), WithNative()}, "WithNative"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				p, err := NewPort(tc.c, portOptions(tc.opts...)...)
				require.Error(t, err)
				assert.Nil(t, p)
				assert.Contains(t, err.Error(), tc.want)
				assert.True(t, strings.HasPrefix(err.Error(), "iocp: "), err.Error())
			})
		}
	})

	t.Run("S3_PacketUnchanged", testS3)

	t.Run("S4_ExactlyOnce", stress)

	t.Run("S5_FIFO", func(t *testing.T) {
		const n = 10_000
		p := newPort(t, 1)
		for i := range n {
			post(t, p, i)
		}
		w := p.NewWorker()
		for i := range n {
			pkt, err := w.Get(context.Background())
			require.NoError(t, err)
			require.Equal(t, i, pkt.Key)
		}

		// Several producers: each producer's packets keep their order.
		const producers, each = 4, 5_000
		var wg sync.WaitGroup
		for pr := range producers {
			wg.Go(func() {
				for i := range each {
					assert.NoError(t, p.Post(Packet{Key: pr, Bytes: i}))
				}
			})
		}
		last := []int{-1, -1, -1, -1}
		for range producers * each {
			pkt, err := w.Get(context.Background())
			require.NoError(t, err)
			pr := pkt.Key.(int)
			require.Greater(t, pkt.Bytes, last[pr], "producer %d out of order", pr)
			last[pr] = pkt.Bytes
		}
		wg.Wait()
	})

	t.Run("S6_TryGet", func(t *testing.T) {
		p := newPort(t, 1)
		w := p.NewWorker()
		_, ok := w.TryGet()
		assert.False(t, ok)
		post(t, p, "a")
		pkt, ok := w.TryGet()
		require.True(t, ok)
		assert.Equal(t, "a", pkt.Key)
	})

	t.Run("S7_GetContext", func(t *testing.T) {
		if *nativeFlag {
			// A kernel wait is a system call, which a synctest bubble
			// cannot tell from work: the native backend runs this on the
			// real clock, with short waits; the waits that must go on are
			// watched for a while, not for ever.
			getContext(t, 20*time.Millisecond, func() { time.Sleep(200 * time.Millisecond) })
			return
		}
		synctest.Test(t, func(t *testing.T) {
			getContext(t, time.Second, func() {
				time.Sleep(time.Hour)
				synctest.Wait()
			})
		})
	})

	t.Run("S8_GetBatchQueued", func(t *testing.T) {
		p := newPort(t, 1)
		post(t, p, 0, 1, 2, 3, 4)
		w := p.NewWorker()
		dst := make([]Packet, 3)
		n, err := w.GetBatch(context.Background(), dst)
		require.NoError(t, err)
		require.Equal(t, 3, n)
		for i := range n {
			assert.Equal(t, i, dst[i].Key)
		}
		dst = make([]Packet, 10)
		n, err = w.GetBatch(context.Background(), dst)
		require.NoError(t, err)
		require.Equal(t, 2, n, "what is queued, without waiting for more")
		assert.Equal(t, 3, dst[0].Key)
		assert.Equal(t, 4, dst[1].Key)

		_, err = w.GetBatch(context.Background(), nil)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "iocp: ")
		_, err = w.GetBatch(context.Background(), []Packet{})
		require.Error(t, err)
	})

	t.Run("S9_GetBatchOneWorker", func(t *testing.T) {
		p := newPort(t, 1)
		post(t, p, 0, 1, 2)
		w := p.NewWorker()
		n, err := w.GetBatch(context.Background(), make([]Packet, 8))
		require.NoError(t, err)
		require.Equal(t, 3, n)
		assert.Equal(t, 1, p.Stats().Running, "three packets, one worker")

		// Waiting: the worker is handed one packet and takes those queued
		// when it is released.
		t.Run("Waiting", func(t *testing.T) {
			kernelScheduled(t)
			getBatchWaiting(t, p, w)
		})
	})

	t.Run("S10_BoundedQueue", func(t *testing.T) {
		p := newPort(t, 1, WithQueueLimit(3))
		post(t, p, 0, 1, 2)
		err := p.Post(Packet{Key: 3})
		require.ErrorIs(t, err, ErrQueueFull)
		assert.Equal(t, 3, p.Stats().Queued)
		w := p.NewWorker()
		pkt, err := w.Get(context.Background())
		require.NoError(t, err)
		assert.Equal(t, 0, pkt.Key)
		post(t, p, 3)
		for i := 1; i <= 3; i++ {
			pkt, err := w.Get(context.Background())
			require.NoError(t, err)
			assert.Equal(t, i, pkt.Key, "nothing lost, order kept")
		}

		// Unbounded: Post never blocks nor fails, far past a segment: four
		// times the ring's largest (maxSegment in internal/ring).
		const far = 4 << 16
		p = newPort(t, 1)
		for i := range far {
			require.NoError(t, p.Post(Packet{Bytes: i}))
		}
		assert.Equal(t, far, p.Stats().Queued)
	})

	t.Run("S21_LIFOWaiters", func(t *testing.T) {
		kernelScheduled(t)
		p := newPort(t, 4)
		ws := parkN(t, p, 4)
		post(t, p, "x")
		r := ws[3].result(t)
		require.NoError(t, r.err)
		assert.Equal(t, "x", r.pkt.Key)
		for _, w := range ws[:3] {
			assert.True(t, w.stillWaiting())
		}
		assert.Equal(t, 3, p.Stats().Waiting)
	})

	t.Run("S22_LIFOOrder", func(t *testing.T) {
		kernelScheduled(t)
		p := newPort(t, 5)
		ws := parkN(t, p, 5)
		post(t, p, 0, 1, 2)
		for i := range 3 {
			r := ws[4-i].result(t)
			require.NoError(t, r.err)
			assert.Equal(t, i, r.pkt.Key, "packet %d to waiter %d", i, 4-i)
		}
		assert.True(t, ws[0].stillWaiting())
		assert.True(t, ws[1].stillWaiting())
	})

	t.Run("S23_HandedPacketIsWaiters", func(t *testing.T) {
		kernelScheduled(t)
		p := newPort(t, 2)
		ws := parkN(t, p, 2)
		post(t, p, "mine")
		// The waiter may not have run yet; the packet is its all the same.
		_, ok := p.NewWorker().TryGet()
		assert.False(t, ok, "a Get after the Post took the waiter's packet")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := p.Get(ctx)
		assert.ErrorIs(t, err, context.Canceled)
		r := ws[1].result(t)
		require.NoError(t, r.err)
		assert.Equal(t, "mine", r.pkt.Key)
	})

	t.Run("S24_QueuedRunsAtOnce", func(t *testing.T) {
		kernelScheduled(t)
		p := newPort(t, 2)
		a := runningWorker(t, p)
		runningWorker(t, p)
		ws := parkN(t, p, 1)
		post(t, p, 1, 2)
		assert.Equal(t, 2, p.Stats().Queued, "two running, C=2: queued")
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		pkt, err := a.Get(ctx)
		require.NoError(t, err, "Get waited although a slot and a packet were there")
		assert.Equal(t, 1, pkt.Key)
		assert.True(t, ws[0].stillWaiting())
	})

	t.Run("S25_GateHolds", func(t *testing.T) {
		kernelScheduled(t)
		p := newPort(t, 2)
		ws := parkN(t, p, 4)
		post(t, p, 0, 1, 2, 3)
		for i := range 2 {
			r := ws[3-i].result(t)
			require.NoError(t, r.err)
			assert.Equal(t, i, r.pkt.Key)
		}
		st := p.Stats()
		assert.Equal(t, 2, st.Running)
		assert.Equal(t, 2, st.Waiting)
		assert.Equal(t, 2, st.Queued)
		assert.True(t, ws[0].stillWaiting())
		assert.True(t, ws[1].stillWaiting())
	})

	t.Run("S26_RunningFromHandToGet", func(t *testing.T) {
		kernelScheduled(t)
		p := newPort(t, 2)
		w := p.NewWorker()
		assert.Equal(t, 0, p.Stats().Running, "a new worker is not counted")
		post(t, p, 1)
		_, err := w.Get(context.Background())
		require.NoError(t, err)
		assert.Equal(t, 1, p.Stats().Running, "counted from the hand-over")
		pw := park(t, p, w)
		assert.Equal(t, 0, p.Stats().Running, "not counted while in Get")
		post(t, p, 2)
		require.NoError(t, pw.result(t).err)
		assert.Equal(t, 1, p.Stats().Running)
		w.Block()
		assert.Equal(t, 0, p.Stats().Running, "not counted while blocked")
		w.Unblock()
		assert.Equal(t, 1, p.Stats().Running)
		require.NoError(t, w.Close())
		assert.Equal(t, 0, p.Stats().Running, "not counted once closed")
	})

	t.Run("S27_OneWorkerDrains", func(t *testing.T) {
		kernelScheduled(t)
		p := newPort(t, 1)
		ws := parkN(t, p, 3)
		post(t, p, 0)
		r := ws[2].result(t)
		require.NoError(t, r.err)
		w := ws[2].w
		wakeups := p.Stats().Wakeups
		for i := 1; i <= 100; i++ {
			post(t, p, i)
		}
		for i := 1; i <= 100; i++ {
			pkt, ok := w.TryGet()
			require.True(t, ok)
			assert.Equal(t, i, pkt.Key)
		}
		post(t, p, 101)
		pkt, err := w.Get(context.Background())
		require.NoError(t, err)
		assert.Equal(t, 101, pkt.Key)
		assert.Equal(t, wakeups, p.Stats().Wakeups, "no goroutine woken")
		assert.True(t, ws[0].stillWaiting())
		assert.True(t, ws[1].stillWaiting())
	})

	t.Run("S28_PostWhileRunning", func(t *testing.T) {
		kernelScheduled(t)
		p := newPort(t, 1)
		a := runningWorker(t, p)
		ws := parkN(t, p, 2)
		done := make(chan struct{})
		go func() {
			defer close(done)
			assert.NoError(t, p.Post(Packet{Key: "from elsewhere"}))
		}()
		<-done
		st := p.Stats()
		assert.Equal(t, 1, st.Queued)
		assert.Equal(t, 2, st.Waiting)
		pkt, err := a.Get(context.Background())
		require.NoError(t, err)
		assert.Equal(t, "from elsewhere", pkt.Key)
		assert.True(t, ws[0].stillWaiting() && ws[1].stillWaiting())
	})

	t.Run("S29_BlockReleases", func(t *testing.T) {
		kernelScheduled(t)
		p := newPort(t, 1)
		a := runningWorker(t, p)
		ws := parkN(t, p, 2)
		post(t, p, 1, 2)
		assert.Equal(t, 1, p.Stats().Running)
		a.Block()
		r := ws[1].result(t)
		require.NoError(t, r.err)
		assert.Equal(t, 1, r.pkt.Key, "most recent waiter, oldest packet")
		st := p.Stats()
		assert.Equal(t, 1, st.Running)
		assert.Equal(t, 1, st.Blocked)
		assert.Equal(t, 1, st.Queued)
		assert.True(t, ws[0].stillWaiting())

		// Block with nothing queued frees the slot and releases nobody.
		p2 := newPort(t, 1)
		b := runningWorker(t, p2)
		ws2 := parkN(t, p2, 1)
		b.Block()
		assert.Equal(t, 0, p2.Stats().Running)
		assert.True(t, ws2[0].stillWaiting())
		post(t, p2, "now")
		require.Equal(t, "now", ws2[0].result(t).pkt.Key)
	})

	t.Run("S30_UnblockOvershoot", func(t *testing.T) {
		kernelScheduled(t)
		p := newPort(t, 1)
		a := runningWorker(t, p)
		a.Block()
		runningWorker(t, p) // takes the freed slot
		assert.Equal(t, 1, p.Stats().Running)
		a.Unblock()
		assert.Equal(t, 2, p.Stats().Running, "past the concurrency value")
	})

	t.Run("S31_OvershootHolds", func(t *testing.T) {
		kernelScheduled(t)
		p := newPort(t, 1)
		a := runningWorker(t, p)
		a.Block()
		b := runningWorker(t, p)
		a.Unblock() // R = 2, C = 1
		ws := parkN(t, p, 1)
		post(t, p, 1, 2)
		assert.True(t, ws[0].stillWaiting(), "released while R >= C")
		assert.Equal(t, 2, p.Stats().Queued)
		// b enters Get: R drops to 1, still >= C, so b waits although
		// packets are queued.
		bw := park(t, p, b)
		assert.Equal(t, 2, p.Stats().Queued)
		assert.Equal(t, 1, p.Stats().Running)
		tw := p.NewWorker()
		_, ok := tw.TryGet()
		assert.False(t, ok, "TryGet with R >= C")
		require.NoError(t, tw.Close())
		// a closes: R drops to 0 < C, the most recent waiter (b) runs.
		require.NoError(t, a.Close())
		r := bw.result(t)
		require.NoError(t, r.err)
		assert.Equal(t, 1, r.pkt.Key)
		assert.True(t, ws[0].stillWaiting())
		assert.Equal(t, 1, p.Stats().Queued)
	})

	t.Run("S32_CanceledGetCounted", func(t *testing.T) {
		p := newPort(t, 1)
		runningWorker(t, p) // R = 1 = C
		w := p.NewWorker()
		ctx, cancel := context.WithCancel(context.Background())
		out := make(chan error, 1)
		go func() {
			_, err := w.Get(ctx)
			out <- err
		}()
		eventually(t, func() bool { return p.Stats().Waiting == 1 }, "Get parks")
		cancel()
		require.ErrorIs(t, recv(t, out), context.Canceled)
		st := p.Stats()
		assert.Equal(t, 2, st.Running, "counted again, past C")
		assert.Equal(t, 0, st.Waiting)
		assert.Equal(t, 1, st.Idle, "running without a packet")
		w.Block() // legal only on a running worker
		w.Unblock()
		assert.Equal(t, 0, p.Stats().Idle, "Block ends it")

		// TryGet that finds nothing.
		p2 := newPort(t, 1)
		w2 := p2.NewWorker()
		_, ok := w2.TryGet()
		require.False(t, ok)
		assert.Equal(t, 1, p2.Stats().Running)
		_, ok = w2.TryGet()
		require.False(t, ok)
		assert.Equal(t, 1, p2.Stats().Running, "still one")
	})

	t.Run("S33_WorkerClose", func(t *testing.T) {
		p := newPort(t, 1)
		a := runningWorker(t, p)
		ws := parkN(t, p, 1)
		post(t, p, "queued")
		require.NoError(t, a.Close())
		r := ws[0].result(t)
		require.NoError(t, r.err)
		assert.Equal(t, "queued", r.pkt.Key)

		_, err := a.Get(context.Background())
		assert.ErrorIs(t, err, ErrClosed)
		_, err = a.GetBatch(context.Background(), make([]Packet, 2))
		assert.ErrorIs(t, err, ErrClosed)
		_, ok := a.TryGet()
		assert.False(t, ok)
		assert.ErrorIs(t, a.Close(), ErrClosed)

		// Closing a blocked worker and a new one.
		p = newPort(t, 1)
		b := runningWorker(t, p)
		b.Block()
		require.NoError(t, b.Close())
		assert.Equal(t, 0, p.Stats().Blocked)
		require.NoError(t, p.NewWorker().Close())
		assert.Equal(t, 0, p.Stats().Running)
	})

	t.Run("S34_MisusePanics", func(t *testing.T) {
		p := newPort(t, 2)
		requirePanic(t, func() { p.NewWorker().Block() })
		requirePanic(t, func() { p.NewWorker().Unblock() })
		w := runningWorker(t, p)
		requirePanic(t, w.Unblock)
		w.Block()
		requirePanic(t, w.Block)
		requirePanic(t, func() { w.TryGet() })
		w.Unblock()
		closed := p.NewWorker()
		closed.Close()
		requirePanic(t, closed.Block)

		in := park(t, p, p.NewWorker())
		requirePanic(t, func() { in.w.Get(context.Background()) })
		requirePanic(t, func() { in.w.TryGet() })
		requirePanic(t, in.w.Block)
		post(t, p, "still fine")
		assert.Equal(t, "still fine", in.result(t).pkt.Key)
	})

	t.Run("S35_PortGetOneShot", func(t *testing.T) {
		p := newPort(t, 1)
		post(t, p, 1)
		pkt, err := p.Get(context.Background())
		require.NoError(t, err)
		assert.Equal(t, 1, pkt.Key)
		assert.Equal(t, 0, p.Stats().Running, "not counted after it returns")

		t.Run("WaitsForSlot", func(t *testing.T) {
			kernelScheduled(t)
			portGetWaits(t, p)
		})
	})

	t.Run("S37_CloseWakesAll", func(t *testing.T) {
		p := newPort(t, 4)
		before := p.NewWorker()
		outs := make(chan error, 3)
		go func() {
			_, err := p.NewWorker().Get(context.Background())
			outs <- err
		}()
		go func() {
			_, err := p.NewWorker().GetBatch(context.Background(), make([]Packet, 4))
			outs <- err
		}()
		go func() {
			_, err := p.Get(context.Background())
			outs <- err
		}()
		eventually(t, func() bool { return p.Stats().Waiting == 3 }, "three waiters")
		require.NoError(t, p.Close())
		for range 3 {
			assert.ErrorIs(t, <-outs, ErrClosed)
		}
		require.NoError(t, p.Close(), "idempotent")
		assert.ErrorIs(t, p.Post(Packet{}), ErrClosed)
		_, err := p.Get(context.Background())
		assert.ErrorIs(t, err, ErrClosed)
		_, err = p.Associate(func(context.Context, *Overlapped) (int, error) { return 0, nil }, 1)
		assert.ErrorIs(t, err, ErrClosed)
		for _, w := range []*Worker{before, p.NewWorker()} {
			_, err := w.Get(context.Background())
			assert.ErrorIs(t, err, ErrClosed)
			_, err = w.GetBatch(context.Background(), make([]Packet, 1))
			assert.ErrorIs(t, err, ErrClosed)
			_, ok := w.TryGet()
			assert.False(t, ok)
		}
	})

	t.Run("S38_CloseDiscardsShutdownDrains", func(t *testing.T) {
		p := newPort(t, 1)
		post(t, p, 1, 2, 3, 4, 5)
		require.NoError(t, p.Close())
		st := p.Stats()
		assert.Equal(t, uint64(5), st.Discarded)
		assert.Equal(t, 0, st.Queued)

		// Shutdown drains: workers take every packet, then the port closes.
		p = newPort(t, 2)
		const n = 1000
		for i := range n {
			require.NoError(t, p.Post(Packet{Bytes: i}))
		}
		var got atomic.Int64
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				w := p.NewWorker()
				defer w.Close()
				for {
					if _, err := w.Get(context.Background()); err != nil {
						assert.ErrorIs(t, err, ErrClosed)
						return
					}
					got.Add(1)
				}
			})
		}
		require.NoError(t, p.Shutdown(context.Background()))
		assert.ErrorIs(t, p.Post(Packet{}), ErrClosed)
		wg.Wait()
		assert.Equal(t, int64(n), got.Load())
		assert.Zero(t, p.Stats().Discarded)

		// A drain that does not finish: ctx's error, nothing dropped, and
		// the port still draining.
		p = newPort(t, 1)
		post(t, p, 1, 2, 3)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		assert.Equal(t, ctx.Err(), p.Shutdown(ctx))
		assert.ErrorIs(t, p.Post(Packet{}), ErrClosed, "refuses new posts")
		assert.Equal(t, 3, p.Stats().Queued)
		w := p.NewWorker()
		pkt, err := w.Get(context.Background())
		require.NoError(t, err, "workers go on draining")
		assert.Equal(t, 1, pkt.Key)
		require.NoError(t, p.Close())
		assert.Equal(t, uint64(2), p.Stats().Discarded, "Close counts the rest")
		assert.NoError(t, p.Shutdown(context.Background()), "after Close")
	})

	for _, s := range associateSpec {
		t.Run(s.name, s.fn)
	}

	t.Run("S39_NoGoroutines", func(t *testing.T) {
		p := newPort(t, 2)
		for range 8 {
			w := p.NewWorker()
			go w.Get(context.Background())
		}
		eventually(t, func() bool { return p.Stats().Waiting == 8 }, "eight waiters")
		post(t, p, 1, 2, 3)
		require.NoError(t, p.Close())
		goleak.VerifyNone(t)
	})
}

// stress posts from several producers to workers that block and unblock at
// random and whose Gets end by context at random, and requires every
// packet to be delivered exactly once.
func stress(t *testing.T) {
	producers, workers, each := 4, 8, 20_000
	if testing.Short() {
		each = 2_000
	}
	total := producers * each
	p := newPort(t, 2)
	seen := make([]atomic.Int32, total)
	var delivered atomic.Int64
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			w := p.NewWorker()
			defer w.Close()
			dst := make([]Packet, 4)
			for ctx.Err() == nil {
				var n int
				var err error
				switch rng.IntN(4) {
				case 0: // a Get whose context may end first
					c, cancel := context.WithTimeout(ctx, time.Duration(rng.IntN(50))*time.Microsecond)
					dst[0], err = w.Get(c)
					cancel()
					if err == nil {
						n = 1
					}
				case 1:
					n, err = w.GetBatch(ctx, dst)
				case 2:
					if pkt, ok := w.TryGet(); ok {
						dst[0], n = pkt, 1
					}
				default:
					dst[0], err = w.Get(ctx)
					if err == nil {
						n = 1
					}
				}
				for _, pkt := range dst[:n] {
					if seen[pkt.Bytes].Add(1) != 1 {
						t.Errorf("packet %d delivered twice", pkt.Bytes)
					}
					delivered.Add(1)
				}
				if n > 0 && rng.IntN(8) == 0 {
					w.Blocking(runtime.Gosched)
				}
				if err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Get: %v", err)
				}
			}
		})
	}
	var pw sync.WaitGroup
	for pr := range producers {
		pw.Go(func() {
			for i := range each {
				assert.NoError(t, p.Post(Packet{Key: pr, Bytes: pr*each + i}))
			}
		})
	}
	pw.Wait()
	eventually(t, func() bool { return delivered.Load() == int64(total) }, "all %d delivered (now %d)", total, delivered.Load())
	stop()
	// Workers parked in Get(ctx) leave when ctx ends.
	wg.Wait()
	for i := range seen {
		require.Equal(t, int32(1), seen[i].Load(), "packet %d", i)
	}
	st := p.Stats()
	assert.Zero(t, st.Waiting)
	assert.Zero(t, st.Queued)
	assert.Zero(t, st.Blocked)
}

// getContext is S7 with waits of d and 5d, and settle letting a waiter
// that should not return show that it does not.
func getContext(t *testing.T, d time.Duration, settle func()) {
	p, err := NewPort(1, portOptions()...)
	require.NoError(t, err)
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*d)
	defer cancel()
	start := time.Now()
	w := p.NewWorker()
	_, err = w.Get(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, ctx.Err(), err, "ctx.Err() unchanged")
	assert.GreaterOrEqual(t, time.Since(start), 5*d)

	// Cancelled, without a deadline.
	ctx3, cancel3 := context.WithCancel(context.Background())
	time.AfterFunc(d, cancel3)
	_, err = w.Get(ctx3)
	assert.ErrorIs(t, err, context.Canceled)
	require.NoError(t, w.Close()) // it holds the only slot (S32)

	// Port.Get as well.
	ctx2, cancel2 := context.WithTimeout(context.Background(), d)
	defer cancel2()
	start = time.Now()
	_, err = p.Get(ctx2)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.GreaterOrEqual(t, time.Since(start), d)

	// Without a deadline: waits until a packet comes, however long.
	got := make(chan result, 1)
	go func() {
		pkt, err := p.NewWorker().Get(context.Background())
		got <- result{pkt, err}
	}()
	settle()
	assert.Empty(t, got, "Get returned with nothing posted")
	post(t, p, "late")
	r := <-got
	require.NoError(t, r.err)
	assert.Equal(t, "late", r.pkt.Key)

	// ... or until Close.
	go func() {
		pkt, err := p.NewWorker().Get(context.Background())
		got <- result{pkt, err}
	}()
	settle()
	assert.Empty(t, got)
	p.Close()
	assert.ErrorIs(t, (<-got).err, ErrClosed)
}

// getBatchWaiting is S9's waiting half: w is the port's one running
// worker.
func getBatchWaiting(t *testing.T, p *Port, w *Worker) {
	out := make(chan int, 1)
	dst := make([]Packet, 8)
	batcher := p.NewWorker()
	go func() {
		n, err := batcher.GetBatch(context.Background(), dst)
		assert.NoError(t, err)
		out <- n
	}()
	eventually(t, func() bool { return p.Stats().Waiting == 1 }, "GetBatch parks")
	post(t, p, "a", "b", "c") // queued: w holds the only slot
	assert.Equal(t, 3, p.Stats().Queued)
	w.Block()
	var n int
	select {
	case n = <-out:
	case <-time.After(patience):
		t.Fatal("GetBatch not released")
	}
	require.Equal(t, 3, n)
	assert.Equal(t, []any{"a", "b", "c"}, []any{dst[0].Key, dst[1].Key, dst[2].Key})
	st := p.Stats()
	assert.Equal(t, 1, st.Running)
	assert.Equal(t, 1, st.Blocked)
}

// portGetWaits is S35's second half: a Port.Get waits for a free slot, and
// a loop over Port.Get is not bounded by the concurrency value.
func portGetWaits(t *testing.T, p *Port) {
	a := runningWorker(t, p)
	post(t, p, 2)
	out := make(chan result, 1)
	go func() {
		pkt, err := p.Get(context.Background())
		out <- result{pkt, err}
	}()
	eventually(t, func() bool { return p.Stats().Waiting == 1 }, "Port.Get waits for a slot")
	assert.Equal(t, 1, p.Stats().Queued)
	a.Block()
	r := <-out
	require.NoError(t, r.err)
	assert.Equal(t, 2, r.pkt.Key)
	assert.Equal(t, 0, p.Stats().Running)

	// So a loop over Port.Get is not bounded by C.
	post(t, p, 3, 4)
	for range 2 {
		_, err := p.Get(context.Background())
		require.NoError(t, err)
	}
}

// ownStats returns p's Stats less NoWorker, which counts for the whole
// process, and so for every test that ran before.
func ownStats(p *Port) Stats {
	s := p.Stats()
	s.NoWorker = 0
	return s
}

// noContext is a nil context.Context, a caller's mistake, for the tests
// of misuse.
var noContext context.Context
