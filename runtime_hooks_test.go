package iocp

import (
	"bytes"
	"context"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBlocking(t *testing.T) {
	t.Run("Worker", func(t *testing.T) {
		p := newPort(t, 1)
		w := runningWorker(t, p)
		ws := parkN(t, p, 1)
		post(t, p, "while blocked")
		w.Blocking(func() {
			assert.Equal(t, 1, p.Stats().Blocked)
			r := ws[0].result(t) // the slot went to the waiter
			assert.Equal(t, "while blocked", r.pkt.Key)
		})
		st := p.Stats()
		assert.Equal(t, 0, st.Blocked)
		assert.Equal(t, 2, st.Running, "w and the waiter: overshoot")
	})

	t.Run("WorkerPanics", func(t *testing.T) {
		p := newPort(t, 1)
		w := runningWorker(t, p)
		assert.PanicsWithValue(t, "boom", func() { w.Blocking(func() { panic("boom") }) })
		assert.Equal(t, 0, p.Stats().Blocked, "unblocked on the way out")
		assert.Equal(t, 1, p.Stats().Running)
	})

	t.Run("Context", func(t *testing.T) {
		p := newPort(t, 1)
		w := runningWorker(t, p)
		ctx := NewContext(context.Background(), w)
		require.Same(t, w, FromContext(ctx))
		Blocking(ctx, func() {
			assert.Equal(t, 1, p.Stats().Blocked)
			Blocking(ctx, func() { // nested: already blocked, just runs
				assert.Equal(t, 1, p.Stats().Blocked)
			})
		})
		assert.Equal(t, 0, p.Stats().Blocked)
		assert.Equal(t, 1, p.Stats().Running)
	})

	t.Run("ContextWithoutWorker", func(t *testing.T) {
		assert.Nil(t, FromContext(context.Background()))
		ran := false
		Blocking(context.Background(), func() { ran = true })
		assert.True(t, ran)
	})
}

func TestFollowGOMAXPROCS(t *testing.T) {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	synctest.Test(t, func(t *testing.T) {
		p, err := NewPort(0, FollowGOMAXPROCS())
		require.NoError(t, err)
		defer p.Close()
		fixed := newPort(t, 0)
		require.Equal(t, 1, p.Concurrency())

		runningWorker(t, p)
		ws := parkN(t, p, 1)
		post(t, p, "waits for a second slot")
		runtime.GOMAXPROCS(2)
		time.Sleep(followInterval)
		synctest.Wait()
		assert.Equal(t, 2, p.Concurrency())
		assert.Equal(t, 2, p.Stats().Concurrency)
		assert.Equal(t, "waits for a second slot", ws[0].result(t).pkt.Key, "released into the new slot")
		assert.Equal(t, 1, fixed.Concurrency(), "without the option the value is fixed (S1)")

		runtime.GOMAXPROCS(1)
		time.Sleep(followInterval)
		synctest.Wait()
		assert.Equal(t, 1, p.Concurrency())
		st := p.Stats()
		assert.Equal(t, 2, st.Running, "both still run, past the new value, as after an overshoot")
		ws = parkN(t, p, 1)
		post(t, p, "stays queued")
		synctest.Wait()
		assert.True(t, ws[0].stillWaiting(), "no release while Running >= C")
		p.Close()
		assert.ErrorIs(t, ws[0].result(t).err, ErrClosed)
	})
}

// TestPoolRuntimeHooks checks that a pool's workers carry its pprof labels,
// and that its packets run in trace regions.
func TestPoolRuntimeHooks(t *testing.T) {
	t.Run("Labels", func(t *testing.T) {
		p := newPort(t, 1, WithName("labelled"))
		type labels struct{ port, worker string }
		got := make(chan labels, 1)
		profile := make(chan string, 1)
		newPool(t, p, 3, func(ctx context.Context, pkt Packet) {
			port, _ := pprof.Label(ctx, "iocp.port")
			worker, _ := pprof.Label(ctx, "iocp.worker")
			got <- labels{port, worker}
			var b strings.Builder
			pprof.Lookup("goroutine").WriteTo(&b, 1)
			profile <- b.String()
		})
		post(t, p, "x")
		l := recv(t, got)
		assert.Equal(t, "labelled", l.port)
		i, err := strconv.Atoi(l.worker)
		require.NoError(t, err)
		assert.True(t, 0 <= i && i < 3, "worker %d", i)
		assert.Contains(t, recv(t, profile), `"iocp.port":"labelled"`, "the goroutines carry the labels")
	})

	t.Run("TraceRegions", func(t *testing.T) {
		var buf bytes.Buffer
		if err := trace.Start(&buf); err != nil {
			t.Skipf("tracing is on already: %v", err)
		}
		p := newPort(t, 1)
		handled := make(chan any, 1)
		pl := newPool(t, p, 1, keys(handled))
		post(t, p, "traced")
		recv(t, handled)
		require.NoError(t, pl.Shutdown(context.Background()))
		trace.Stop()
		assert.Contains(t, buf.String(), "iocp.packet", "the trace names the region")
	})
}

func TestBlockingMisuse(t *testing.T) {
	t.Run("NilContext", func(t *testing.T) {
		assert.PanicsWithValue(t, "iocp: nil Context", func() { Blocking(noContext, func() {}) })
	})
	t.Run("NoWorkerIsCounted", func(t *testing.T) {
		// A handler that passes its request's context, not its pool's:
		// fn runs, no slot is freed, and Stats says so.
		p := newPort(t, 1)
		before := p.Stats().NoWorker
		ran := false
		Blocking(context.Background(), func() { ran = true })
		assert.True(t, ran)
		assert.Equal(t, before+1, p.Stats().NoWorker)
	})
}
