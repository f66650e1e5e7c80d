package iocp

import (
	"context"
	"errors"
	"log"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newPool starts a pool on p and closes it when the test ends.
func newPool(t *testing.T, p *Port, n int, h Handler, opts ...PoolOption) *Pool {
	t.Helper()
	pl, err := p.NewPool(n, h, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { pl.Close() })
	return pl
}

// recv receives from ch within patience.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(patience):
		t.Fatal("nothing arrived")
		panic("unreachable")
	}
}

// keys returns a handler that sends each packet's key to the channel.
func keys(ch chan<- any) Handler {
	return func(_ context.Context, pkt Packet) { ch <- pkt.Key }
}

// errorsTo returns an option that sends the pool's errors to a channel.
func errorsTo(ch chan<- error) PoolOption {
	return WithErrorHandler(func(err error) { ch <- err })
}

func TestPool(t *testing.T) {
	t.Run("HandlesEveryPacketOnce", func(t *testing.T) {
		p := newPort(t, 2)
		const n = 1000
		var seen [n]atomic.Int32
		var noWorker atomic.Int32
		pl := newPool(t, p, 0, func(ctx context.Context, pkt Packet) {
			if FromContext(ctx) == nil {
				noWorker.Add(1)
			}
			seen[pkt.Key.(int)].Add(1)
		})
		assert.Equal(t, 4, pl.Workers(), "twice the concurrency value")
		assert.Same(t, p, pl.Port())
		for i := range n {
			require.NoError(t, p.Post(Packet{Key: i}))
		}
		require.NoError(t, pl.Shutdown(context.Background()))
		for i := range seen {
			require.Equal(t, int32(1), seen[i].Load(), "packet %d", i)
		}
		assert.Zero(t, noWorker.Load(), "the handler's context carries its worker")
		assert.Zero(t, p.Stats().Discarded)
	})

	t.Run("BadInput", func(t *testing.T) {
		var nilContext context.Context // a caller's mistake
		p := newPort(t, 1)
		nop := func(context.Context, Packet) {}
		for _, tc := range []struct {
			name string
			n    int
			h    Handler
			opts []PoolOption
			want string
		}{
			{"nil context", 1, nop, []PoolOption{WithContext(nilContext)}, "nil Context"},
			{"negative n", -1, nop, nil, "pool of -1 workers"},
			{"too many", 1<<20 + 1, nop, nil, "more than 1048576"},
			{"nil option", 1, nop, []PoolOption{nil}, "nil PoolOption"},
			{"nil error handler", 1, nop, []PoolOption{WithErrorHandler(nil)}, "nil error handler"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				pl, err := p.NewPool(tc.n, tc.h, tc.opts...)
				require.ErrorIs(t, err, ErrInvalid)
				assert.Contains(t, err.Error(), tc.want)
				assert.Nil(t, pl)
			})
		}
		assert.Equal(t, Stats{Concurrency: 1}, ownStats(p), "no worker was started")
		_, err := newPort(t, 1<<30).NewPool(0, nop)
		assert.ErrorIs(t, err, ErrInvalid, "the default of twice a huge concurrency")

		draining := newPort(t, 1)
		post(t, draining, "keeps the port draining")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		require.ErrorIs(t, draining.Shutdown(ctx), context.Canceled)
		_, err = draining.NewPool(1, nop)
		assert.ErrorIs(t, err, ErrClosed, "draining")
		draining.Close()
		_, err = draining.NewPool(1, nop)
		assert.ErrorIs(t, err, ErrClosed, "closed")
	})

	t.Run("BlockingHandsTheSlotOn", func(t *testing.T) {
		p := newPort(t, 1)
		proceed := make(chan struct{})
		handled := make(chan any, 2)
		newPool(t, p, 2, func(ctx context.Context, pkt Packet) {
			if pkt.Key == "blocks" {
				Blocking(ctx, func() { <-proceed })
			}
			handled <- pkt.Key
		})
		post(t, p, "blocks")
		eventually(t, func() bool { return p.Stats().Blocked == 1 }, "the first handler blocks")
		post(t, p, "runs meanwhile")
		assert.Equal(t, "runs meanwhile", recv(t, handled))
		close(proceed)
		assert.Equal(t, "blocks", recv(t, handled))
	})

	t.Run("PanicIsReportedAndThePoolServesOn", func(t *testing.T) {
		p := newPort(t, 1)
		errs := make(chan error, 1)
		handled := make(chan any, 1)
		boom := errors.New("boom")
		pl := newPool(t, p, 1, func(ctx context.Context, pkt Packet) {
			switch pkt.Key {
			case "panic":
				panic("panic")
			case "panic with an error":
				panic(boom)
			case "panic while blocked":
				FromContext(ctx).Block()
				panic("blocked")
			}
			handled <- pkt.Key
		}, errorsTo(errs))

		for _, key := range []string{"panic", "panic with an error", "panic while blocked"} {
			post(t, p, key)
			err := recv(t, errs)
			var pe *PanicError
			require.ErrorAs(t, err, &pe, key)
			assert.Equal(t, key, pe.Packet.Key)
			assert.Contains(t, string(pe.Stack), "pool_test.go", "the stack shows the panic")
			assert.Contains(t, err.Error(), "iocp: handler panic")
			if key == "panic with an error" {
				assert.ErrorIs(t, err, boom)
				assert.Equal(t, boom, pe.Value)
			} else {
				assert.NotErrorIs(t, err, boom)
			}
			// One worker: it is the replacement that handles this.
			post(t, p, "after "+key)
			assert.Equal(t, "after "+key, recv(t, handled))
			eventually(t, func() bool {
				st := p.Stats()
				return st.Running == 0 && st.Blocked == 0 && st.Waiting == 1
			}, "the slot is free and one worker waits: %+v", p.Stats())
		}
		assert.Equal(t, 1, pl.Workers())
	})

	t.Run("PanicLoggedByDefault", func(t *testing.T) {
		lines := make(logSink, 1)
		log.SetOutput(lines)
		defer log.SetOutput(os.Stderr)
		p := newPort(t, 1)
		newPool(t, p, 1, func(context.Context, Packet) { panic("logged") })
		post(t, p, "key")
		line := recv(t, lines)
		assert.Contains(t, line, "iocp: handler panic: logged (packet key key)")
		assert.Contains(t, line, "pool_test.go")
	})

	t.Run("ShutdownDrains", func(t *testing.T) {
		p := newPort(t, 1)
		pl, start, handled := gatedPool(t, p)
		const n = 100
		for i := range n {
			post(t, p, i)
		}
		done := make(chan error)
		go func() { done <- pl.Shutdown(context.Background()) }()
		probes := 0 // Posts accepted before Shutdown began
		eventually(t, func() bool {
			err := p.Post(Packet{Key: "probe"})
			if err == nil {
				probes++
			}
			return err == ErrClosed
		}, "Shutdown refuses Posts")
		close(start)
		require.NoError(t, recv(t, done))
		assert.Equal(t, int32(n+probes), handled.Load())
		assert.Zero(t, p.Stats().Discarded)
	})

	t.Run("ShutdownDeadline", func(t *testing.T) {
		kernelScheduled(t) // two workers, one slot: a packet stays queued
		p := newPort(t, 1)
		pl, proceed, handled := gatedPool(t, p)
		post(t, p, 1, 2, 3)
		eventually(t, func() bool { return p.Stats().Running == 1 }, "a handler holds the slot")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		require.ErrorIs(t, pl.Shutdown(ctx), context.Canceled)
		assert.Equal(t, 2, p.Stats().Queued, "nothing dropped")
		close(proceed)
		require.NoError(t, pl.Shutdown(context.Background()))
		assert.Equal(t, int32(3), handled.Load())
		assert.Zero(t, p.Stats().Discarded)
	})

	t.Run("ShutdownWaitsForHandlers", func(t *testing.T) {
		// A handler in flight holds the drain up: it may still start
		// operations on its handles.
		p := newPort(t, 1)
		proceed := make(chan struct{})
		pl := newPool(t, p, 1, func(context.Context, Packet) { <-proceed })
		post(t, p, "held")
		eventually(t, func() bool { return p.Stats().Queued == 0 }, "the handler runs")
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			for p.Post(Packet{}) != ErrClosed {
				time.Sleep(time.Millisecond)
			}
			cancel() // Shutdown has begun, the handler still runs
		}()
		require.ErrorIs(t, pl.Shutdown(ctx), context.Canceled, "a handler still runs")
		close(proceed)
		require.NoError(t, pl.Shutdown(context.Background()))
	})

	t.Run("ShutdownTwice", func(t *testing.T) {
		p := newPort(t, 1)
		pl := newPool(t, p, 2, func(context.Context, Packet) {})
		post(t, p, "a", "b")
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		for range 2 {
			wg.Go(func() { errs <- pl.Shutdown(context.Background()) })
		}
		wg.Wait()
		require.NoError(t, <-errs)
		require.NoError(t, <-errs)
		require.NoError(t, pl.Shutdown(context.Background()), "after it finished")
		require.NoError(t, pl.Close())
		require.NoError(t, pl.Close())
		assert.ErrorIs(t, p.Post(Packet{}), ErrClosed)
	})

	t.Run("CloseCancelsHandlers", func(t *testing.T) {
		kernelScheduled(t) // two workers, one slot: the second packet stays queued
		p := newPort(t, 1)
		entered := make(chan struct{})
		pl := newPool(t, p, 2, func(ctx context.Context, _ Packet) {
			close(entered)
			<-ctx.Done()
		})
		post(t, p, "waits for ctx", "queued")
		<-entered
		require.NoError(t, pl.Close())
		st := p.Stats()
		assert.Equal(t, uint64(1), st.Discarded)
		assert.Zero(t, st.Running)
	})

}

// gatedPool starts a pool of 2 workers on p whose handlers wait until
// the returned channel is closed, and then count the packet.
func gatedPool(t *testing.T, p *Port) (pl *Pool, proceed chan struct{}, handled *atomic.Int32) {
	proceed = make(chan struct{})
	handled = new(atomic.Int32)
	pl = newPool(t, p, 2, func(context.Context, Packet) {
		<-proceed
		handled.Add(1)
	})
	return pl, proceed, handled
}

// raise makes m at least n.
func raise(m *atomic.Int32, n int32) {
	for old := m.Load(); n > old && !m.CompareAndSwap(old, n); old = m.Load() {
	}
}

// logSink is a log output that sends each message to a channel.
type logSink chan string

func (s logSink) Write(b []byte) (int, error) {
	s <- string(b)
	return len(b), nil
}

func TestBind(t *testing.T) {
	t.Run("CallbackPerCompletion", func(t *testing.T) {
		p := newPort(t, 1)
		posted := make(chan any, 1)
		pl := newPool(t, p, 2, keys(posted))
		r, w, err := os.Pipe()
		require.NoError(t, err)
		defer w.Close()

		var ov Overlapped
		buf := make([]byte, 16)
		reads := make(chan string, 2)
		var h *Handle
		h, err = pl.Bind(r, func(ctx context.Context, pkt Packet) {
			assert.Same(t, h, pkt.Key, "a bound handle is its own key")
			assert.Same(t, &ov, pkt.Overlapped)
			assert.NotNil(t, FromContext(ctx))
			reads <- string(buf[:ov.Bytes])
			if ov.Value == "first" { // the callback starts the next read
				ov.Value = "second"
				assert.NoError(t, h.Read(&ov, buf))
			}
		})
		require.NoError(t, err)
		assert.Same(t, h, h.Key())
		ov.Value = "first"
		require.NoError(t, h.Read(&ov, buf))
		w.Write([]byte("hello"))
		assert.Equal(t, "hello", recv(t, reads))
		w.Write([]byte("world"))
		assert.Equal(t, "world", recv(t, reads))

		post(t, p, "posted")
		assert.Equal(t, "posted", recv(t, posted), "posted packets go to the pool's handler")
		require.NoError(t, h.Close())
	})

	t.Run("BadInput", func(t *testing.T) {
		p := newPort(t, 1)
		nop := func(context.Context, Packet) {}
		pl := newPool(t, p, 1, nop)
		r, w, err := os.Pipe()
		require.NoError(t, err)
		defer w.Close()
		h, err := pl.Bind(r, nop)
		require.NoError(t, err)
		defer h.Close()

		_, err = pl.Bind(r, nop)
		assert.ErrorIs(t, err, ErrAssociated, "bound twice")
		_, err = newPool(t, newPort(t, 1), 1, nop).Bind(r, nop)
		assert.ErrorIs(t, err, ErrAssociated, "bound to another pool")
		_, err = p.Associate(r, "key")
		assert.ErrorIs(t, err, ErrAssociated, "associated after Bind")
		_, err = pl.Bind(w, nil)
		assert.ErrorIs(t, err, ErrInvalid, "nil callback")
		_, err = pl.Bind(nil, nop)
		assert.ErrorIs(t, err, ErrInvalid, "nil source")
		_, err = pl.Bind(42, nop)
		assert.ErrorIs(t, err, errors.ErrUnsupported)

		require.NoError(t, pl.Shutdown(context.Background()))
		_, err = pl.Bind(w, nop)
		assert.ErrorIs(t, err, ErrClosed, "after Shutdown")
	})

	t.Run("Default", func(t *testing.T) {
		t.Cleanup(resetDefault)
		lines := make(logSink, 1)
		log.SetOutput(lines)
		defer log.SetOutput(os.Stderr)

		r, w, err := os.Pipe()
		require.NoError(t, err)
		defer w.Close()
		reads := make(chan int, 1)
		h, err := Bind(r, func(_ context.Context, pkt Packet) { reads <- pkt.Bytes })
		require.NoError(t, err)
		defer h.Close()
		pl := Default()
		assert.Same(t, pl, Default(), "one default pool")
		assert.Same(t, pl.Port(), h.p, "Bind uses it")
		assert.Equal(t, "default", pl.Port().Name())
		assert.Equal(t, runtime.GOMAXPROCS(0), pl.Port().Concurrency())
		assert.Equal(t, 2*runtime.GOMAXPROCS(0), pl.Workers())

		var ov Overlapped
		require.NoError(t, h.Read(&ov, make([]byte, 8)))
		w.Write([]byte("abc"))
		assert.Equal(t, 3, recv(t, reads))

		require.NoError(t, pl.Port().Post(Packet{Key: "stray"}))
		assert.Contains(t, recv(t, lines), "no handler (key stray)")

		requirePanic(t, func() { pl.Shutdown(context.Background()) })
		requirePanic(t, func() { pl.Close() })
	})
}

// resetDefault closes the default pool, so that the test leaves no
// goroutine behind.
func resetDefault() {
	defaultPool.Lock()
	pl := defaultPool.pl
	defaultPool.pl = nil
	defaultPool.Unlock()
	if pl != nil {
		pl.close()
	}
}

// TestPoolExactlyOnce runs a pool whose handlers block, panic, and block
// and then panic, while several goroutines post: every packet is handled
// exactly once, every panic is reported, and the handlers that run outside
// Blocking never number more than the concurrency value.
func TestPoolExactlyOnce(t *testing.T) {
	const c, producers = 2, 4
	perProducer := 5000
	if testing.Short() {
		perProducer = 500
	}
	p := newPort(t, c)
	var (
		seen            = make([]atomic.Int32, producers*perProducer)
		inFlight, most  atomic.Int32
		panics, wantPan atomic.Int32
	)
	pl := newPool(t, p, 3*c, func(ctx context.Context, pkt Packet) {
		id := pkt.Key.(int)
		raise(&most, inFlight.Add(1))
		seen[id].Add(1)
		action := pkt.Bytes
		inFlight.Add(-1) // before the slot can be freed, by Block or by the panic
		switch action {
		case 1:
			Blocking(ctx, func() { time.Sleep(time.Duration(id%50) * time.Microsecond) })
		case 2:
			panic(id)
		case 3:
			FromContext(ctx).Block()
			panic(id)
		}
	}, WithErrorHandler(func(err error) {
		var pe *PanicError
		if errors.As(err, &pe) {
			panics.Add(1)
		}
	}))

	var wg sync.WaitGroup
	for i := range producers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			for j := range perProducer {
				action := 0
				switch r := rng.IntN(100); {
				case r < 10:
					action = 1
				case r < 12:
					action = 2
				case r < 13:
					action = 3
				}
				if action >= 2 {
					wantPan.Add(1)
				}
				if err := p.Post(Packet{Key: i*perProducer + j, Bytes: action}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, pl.Shutdown(context.Background()))
	for id := range seen {
		require.Equal(t, int32(1), seen[id].Load(), "packet %d", id)
	}
	assert.Equal(t, wantPan.Load(), panics.Load(), "every panic reported")
	if concurrencyEnforced() {
		assert.LessOrEqual(t, most.Load(), int32(c), "handlers outside Blocking at once")
	}
	t.Logf("%d packets, %d panics, at most %d handlers at once outside Blocking",
		len(seen), panics.Load(), most.Load())
}

// TestPoolServesAlone: a port has one pool, or workers of its own, never
// both: either would take packets only the pool can run.
func TestPoolServesAlone(t *testing.T) {
	t.Run("SecondPool", func(t *testing.T) {
		p := newPort(t, 1)
		pl := newPool(t, p, 1, nil)
		_, err := p.NewPool(1, nil)
		require.ErrorIs(t, err, ErrInvalid)
		assert.Contains(t, err.Error(), "pool already")
		v, err := Call(context.Background(), pl, func(context.Context) (int, error) { return 1, nil })
		require.NoError(t, err, "the first pool is unharmed")
		assert.Equal(t, 1, v)
	})
	t.Run("OwnWorkerBesidePool", func(t *testing.T) {
		p := newPort(t, 1)
		newPool(t, p, 1, nil)
		assert.PanicsWithValue(t, "iocp: NewWorker on a port served by a Pool: its packets are the pool's", func() { p.NewWorker() })
		assert.PanicsWithValue(t, "iocp: Get on a port served by a Pool: its packets are the pool's", func() { p.Get(context.Background()) })
	})
	t.Run("PoolBesideOwnWorker", func(t *testing.T) {
		p := newPort(t, 1)
		w := p.NewWorker()
		_, err := p.NewPool(1, nil)
		require.ErrorIs(t, err, ErrInvalid)
		assert.Contains(t, err.Error(), "workers of its own")
		require.NoError(t, w.Close())
		pl := newPool(t, p, 1, nil) // once it is closed
		require.NoError(t, pl.Go(func(context.Context) error { return nil }))
		require.NoError(t, pl.Wait())
	})
	t.Run("WorkersAfterClose", func(t *testing.T) {
		p := newPort(t, 2)
		pl, err := p.NewPool(3, nil)
		require.NoError(t, err)
		require.NoError(t, pl.Close())
		assert.Equal(t, 0, pl.Workers())
		assert.Equal(t, 0, pl.Stats().Workers)
	})
}
