package iocp

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAllocs requires the hot calls to allocate nothing, with a context
// that never ends and with a cancellable one, on the path that finds a
// packet and on the path that parks; on the native backend, a park with a
// cancellable context allocates once. .ci/run runs it without -race.
func TestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates; run without -race")
	}
	cancellable, cancel := context.WithCancel(context.Background())
	defer cancel()
	for name, ctx := range map[string]context.Context{
		"Background":  context.Background(),
		"cancellable": cancellable,
	} {
		t.Run(name, func(t *testing.T) {
			p := newPort(t, 2) // w runs in one slot, Port.Get in the other
			w := p.NewWorker()
			dst := make([]Packet, 4)
			ov := &Overlapped{}
			for _, c := range []struct {
				op string
				fn func()
			}{
				{"Post+Get", func() {
					p.Post(Packet{Key: 1, Overlapped: ov})
					w.Get(ctx)
				}},
				{"Post+TryGet", func() {
					p.Post(Packet{Key: 1})
					w.TryGet()
				}},
				{"Post+GetBatch", func() {
					p.Post(Packet{Key: 1})
					p.Post(Packet{Key: 2})
					w.GetBatch(ctx, dst)
				}},
				{"Post+Port.Get", func() {
					p.Post(Packet{Key: 1})
					p.Get(ctx)
				}},
				{"PostWait+Get", func() {
					p.PostWait(ctx, Packet{Key: 1})
					w.Get(ctx)
				}},
				{"PostBatch+GetBatch", func() {
					p.PostBatch(dst[:3])
					w.GetBatch(ctx, dst)
				}},
				{"Block+Unblock", func() { // w runs: it took packets above
					w.Block()
					w.Unblock()
				}},
			} {
				assert.Zero(t, testing.AllocsPerRun(1000, c.fn), c.op)
			}

			// The parking path: a worker parked in Get is woken by each
			// Post and answers on a channel.
			ack := make(chan struct{})
			go func() {
				w := p.NewWorker()
				defer w.Close()
				for {
					if _, err := w.Get(ctx); err != nil {
						close(ack)
						return
					}
					ack <- struct{}{}
				}
			}()
			w.Close() // leave the slot to the parked worker
			want := 0.0
			if *nativeFlag && ctx.Done() != nil {
				// A kernel wait that a context can end needs that
				// context's AfterFunc, which allocates its registration.
				want = 1
			}
			assert.Equal(t, want, testing.AllocsPerRun(1000, func() {
				p.Post(Packet{Key: 1})
				<-ack
			}), "Post to a parked worker")
			p.Close()
			<-ack
		})
	}
}

// TestPoolAllocs: Pool.Go allocates nothing a task in steady state; Call
// makes one allocation, its job, and a Group one a function, as
// errgroup's Go makes one (its goroutine's closure); the functions here
// capture nothing, so the count is the library's own.
func TestPoolAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates; run without -race")
	}
	pl := newPool(t, newPort(t, 2), 2, nil)
	ctx := context.Background()
	nop := func(context.Context) error { return nil }
	two := func(context.Context) (int, error) { return 2, nil }
	assert.Zero(t, testing.AllocsPerRun(1000, func() {
		pl.Go(nop)
		pl.Wait()
	}), "Pool.Go and Wait")
	assert.Equal(t, 1.0, testing.AllocsPerRun(1000, func() {
		Call(ctx, pl, two)
	}), "Call")
	g, _ := pl.Group(ctx)
	assert.Equal(t, 1.0, testing.AllocsPerRun(1000, func() {
		g.Go(nop)
	}), "Group.Go")
	require.NoError(t, g.Wait())
}
