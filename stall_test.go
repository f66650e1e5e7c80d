package iocp

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// WithStallAsBlocked: a handler that runs past the stall limit without
// saying it waits is counted as blocked, so that its slot goes to another
// worker. The bubble tests run on the pure-Go port (pureGoPort), which is
// the only one the option is for; the clock is the bubble's, so "past the
// limit" is a Sleep, not a wait on the real clock.

const stallLimit = 10 * time.Millisecond

// stuckAndQuick returns a handler that waits on proceed for a packet
// whose key is "stuck", without Block, and counts the others, with the
// most seen running at once.
func stuckAndQuick(proceed <-chan struct{}, quick, running, most *atomic.Int32) Handler {
	return func(_ context.Context, pkt Packet) {
		if pkt.Key == "stuck" {
			<-proceed
			return
		}
		raise(most, running.Add(1))
		running.Add(-1)
		quick.Add(1)
	}
}

func TestPoolStallAsBlocked(t *testing.T) {
	t.Run("FreesTheSlot", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := pureGoPort(t)
			proceed := make(chan struct{})
			var quick, running, most atomic.Int32
			pl := newPool(t, p, 1, stuckAndQuick(proceed, &quick, &running, &most),
				WithStallReport(stallLimit, func(Stall) {}), WithStallAsBlocked())
			post(t, p, "stuck", 1, 2, 3)
			synctest.Wait()
			assert.Equal(t, 3, p.Stats().Queued, "within the limit, the stuck handler holds the slot")

			time.Sleep(2 * stallLimit)
			synctest.Wait()
			assert.Equal(t, int32(3), quick.Load(), "past it, another worker takes the queue")
			assert.Equal(t, int32(1), most.Load())
			s := p.Stats()
			assert.Equal(t, 1, s.Blocked, "the stuck handler counts as blocked")
			assert.Equal(t, 0, s.Running)
			assert.Equal(t, 2, pl.Workers())
			assert.Equal(t, 1, pl.Stats().Stalled)

			close(proceed)
			synctest.Wait()
			s = p.Stats()
			assert.Equal(t, 0, s.Blocked)
			assert.Equal(t, 0, s.Running)
			assert.Equal(t, 2, s.Waiting, "the stuck handler's worker is back in Get")
		})
	})

	t.Run("WithoutIt", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := pureGoPort(t)
			proceed := make(chan struct{})
			defer close(proceed)
			var quick, running, most atomic.Int32
			pl := newPool(t, p, 1, stuckAndQuick(proceed, &quick, &running, &most),
				WithStallReport(stallLimit, func(Stall) {}))
			post(t, p, "stuck", 1, 2, 3)
			time.Sleep(2 * stallLimit)
			synctest.Wait()
			assert.Equal(t, int32(0), quick.Load(), "only reported: the slot stays held")
			assert.Equal(t, 3, p.Stats().Queued)
			assert.Equal(t, 1, p.Stats().Running)
			assert.Equal(t, 1, pl.Stats().Stalled)
		})
	})

	// A stalled handler's worker that returns to Get while Concurrency
	// workers run waits for a slot, as a new worker does: the stall
	// leaves no overshoot behind.
	t.Run("ReturnsWithoutOvershoot", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := pureGoPort(t)
			proceed, hold := make(chan struct{}), make(chan struct{})
			pl := newPool(t, p, 1, func(_ context.Context, pkt Packet) {
				switch pkt.Key {
				case "stuck":
					<-proceed
				case "hold":
					<-hold // within the slot the stall freed
				}
			}, WithStallReport(stallLimit, func(Stall) {}), WithStallAsBlocked(), WithMaxWorkers(2))
			post(t, p, "stuck")
			time.Sleep(2 * stallLimit)
			synctest.Wait()
			post(t, p, "hold")
			synctest.Wait()
			require.Equal(t, 1, p.Stats().Running, `"hold" runs in the freed slot`)

			close(proceed) // the stuck handler returns, and its worker asks for a slot
			synctest.Wait()
			s := p.Stats()
			assert.Equal(t, 1, s.Running, "one runs: the concurrency value holds")
			assert.Equal(t, 1, s.Waiting)
			assert.Equal(t, 0, s.Blocked)
			// "hold" has been running past the limit all along: stalled too.
			time.Sleep(2 * stallLimit)
			synctest.Wait()
			assert.Equal(t, 1, p.Stats().Blocked)
			close(hold)
			synctest.Wait()
			s = p.Stats()
			assert.Equal(t, [3]int{0, 0, 2}, [3]int{s.Running, s.Blocked, s.Waiting})
			assert.Equal(t, uint64(2), pl.Stats().Handled)
		})
	})

	// Block in a handler that is stalled already is no misuse: it stays
	// counted as blocked once, and after Unblock it runs counted, until
	// the watcher looks again.
	t.Run("BlockWhileStalled", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := pureGoPort(t)
			inBlock, leaveBlock, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
			newPool(t, p, 1, func(ctx context.Context, _ Packet) {
				time.Sleep(2 * stallLimit)
				Blocking(ctx, func() {
					inBlock <- struct{}{}
					<-leaveBlock
				})
				<-done
			}, WithStallReport(stallLimit, func(Stall) {}), WithStallAsBlocked())
			post(t, p, nil)
			<-inBlock
			s := p.Stats()
			assert.Equal(t, [2]int{0, 1}, [2]int{s.Running, s.Blocked}, "stalled, then blocked: counted once")
			close(leaveBlock)
			synctest.Wait()
			time.Sleep(stallLimit) // the watcher's next look
			synctest.Wait()
			s = p.Stats()
			assert.Equal(t, [2]int{0, 1}, [2]int{s.Running, s.Blocked}, "stalled again after Unblock")
			close(done)
			synctest.Wait()
			s = p.Stats()
			assert.Equal(t, [3]int{0, 0, 1}, [3]int{s.Running, s.Blocked, s.Waiting})
		})
	})

	// A Shutdown that waits for a stalled handler ends when it does.
	t.Run("Shutdown", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := pureGoPort(t)
			proceed := make(chan struct{})
			pl := newPool(t, p, 1, func(context.Context, Packet) { <-proceed },
				WithStallReport(stallLimit, func(Stall) {}), WithStallAsBlocked())
			post(t, p, nil)
			time.Sleep(2 * stallLimit)
			synctest.Wait()
			require.Equal(t, 1, p.Stats().Blocked)
			done := make(chan error, 1)
			go func() { done <- pl.Shutdown(context.Background()) }()
			synctest.Wait()
			select {
			case err := <-done:
				t.Fatalf("Shutdown returned %v with a handler running", err)
			default:
			}
			close(proceed)
			synctest.Wait()
			select {
			case err := <-done:
				assert.NoError(t, err)
			default:
				t.Fatal("Shutdown still waits after the handler returned")
			}
		})
	})

	t.Run("Options", func(t *testing.T) {
		p := pureGoPort(t)
		_, err := p.NewPool(1, func(context.Context, Packet) {}, WithStallAsBlocked())
		assert.ErrorIs(t, err, ErrInvalid, "without WithStallReport")
		if *nativeFlag {
			np := newPort(t, 1)
			_, err := np.NewPool(1, func(context.Context, Packet) {},
				WithStallReport(stallLimit, func(Stall) {}), WithStallAsBlocked())
			assert.ErrorIs(t, err, ErrInvalid, "on a native port")
		}
	})
}

// TestPoolStallAsBlockedStress runs handlers of random lengths around a
// short stall limit, on the real clock, so that the watcher's stalls race
// the handlers' ends and their next Gets. Each packet is handled exactly
// once, and when all are, the port's counts are back to every worker
// waiting: no slot is lost or counted twice.
func TestPoolStallAsBlockedStress(t *testing.T) {
	packets := 3000
	if testing.Short() {
		packets = 300
	}
	p, err := NewPort(2)
	require.NoError(t, err)
	defer p.Close()
	seen := make([]atomic.Int32, packets)
	var handled, stalls atomic.Int32
	pl, err := p.NewPool(2, func(ctx context.Context, pkt Packet) {
		switch d := time.Duration(rand.IntN(400)) * time.Microsecond; {
		case pkt.Bytes%7 == 0:
			Blocking(ctx, func() { time.Sleep(d) })
		default:
			time.Sleep(d) // unmarked: past the limit it is stalled
		}
		seen[pkt.Bytes].Add(1)
		handled.Add(1)
	}, WithStallReport(200*time.Microsecond, func(Stall) { stalls.Add(1) }), WithStallAsBlocked())
	require.NoError(t, err)
	for i := range packets {
		require.NoError(t, p.Post(Packet{Bytes: i}))
	}
	eventually(t, func() bool { return int(handled.Load()) == packets }, "all handled")
	eventually(t, func() bool {
		s := p.Stats()
		return s.Running == 0 && s.Blocked == 0 && s.Waiting == pl.Workers()
	}, "every worker waiting: %+v, %d workers", p.Stats(), pl.Workers())
	for i := range seen {
		require.Equal(t, int32(1), seen[i].Load(), "packet %d", i)
	}
	t.Logf("%d of %d handlers stalled", stalls.Load(), packets)
	require.NoError(t, pl.Shutdown(context.Background()))
}
