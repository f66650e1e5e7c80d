package iocp

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iocp-go/iocp/internal/ring"
)

// closeRace posts from several goroutines to workers until stop closes
// the port in the middle of it, and requires every packet whose Post
// returned nil to be delivered exactly once or counted as discarded:
// nothing is lost silently, nothing twice.
func closeRace(t *testing.T, stop func(p *Port)) (delivered, discarded int64) {
	const producers, workers = 4, 4
	rounds := 20
	if testing.Short() {
		rounds = 5
	}
	for range rounds {
		p := newPort(t, 2)
		var posted, got atomic.Int64
		var wg sync.WaitGroup
		for range producers {
			wg.Go(func() {
				for {
					err := p.Post(Packet{})
					if err != nil {
						assert.ErrorIs(t, err, ErrClosed)
						return
					}
					posted.Add(1)
				}
			})
		}
		for i := range workers {
			wg.Go(func() {
				w := p.NewWorker()
				defer w.Close()
				dst := make([]Packet, 1+i*3)
				for {
					n, err := w.GetBatch(context.Background(), dst)
					if err != nil {
						assert.ErrorIs(t, err, ErrClosed)
						return
					}
					got.Add(int64(n))
					if i == 0 {
						w.Blocking(func() {})
					}
				}
			})
		}
		for posted.Load() < 20_000 {
			time.Sleep(100 * time.Microsecond)
		}
		stop(p)
		wg.Wait()
		st := p.Stats()
		require.Equal(t, posted.Load(), got.Load()+int64(st.Discarded),
			"posted = delivered + discarded (delivered %d, discarded %d)", got.Load(), st.Discarded)
		assert.Zero(t, st.Queued)
		assert.Zero(t, st.Waiting)
		delivered += got.Load()
		discarded += int64(st.Discarded)
	}
	return delivered, discarded
}

func TestCloseWhilePosting(t *testing.T) {
	closeRace(t, func(p *Port) { require.NoError(t, p.Close()) })
}

func TestShutdownWhilePosting(t *testing.T) {
	delivered, discarded := closeRace(t, func(p *Port) {
		require.NoError(t, p.Shutdown(context.Background()))
	})
	// A Post that passed its check before Shutdown began and pushed after
	// the drain found the port quiet is delivered by the drain after the
	// seal, or returns ErrClosed: a Shutdown that returns nil discards
	// nothing.
	assert.Zero(t, discarded, "Shutdown returned nil, and discarded Posts that returned nil")
	t.Logf("delivered %d", delivered)
}

// TestShutdownThenLatePush: a Post that passed its check before Shutdown
// began, and was preempted until after Shutdown returned, cannot queue
// its packet: the queue refuses it, and Post returns ErrClosed.
func TestShutdownThenLatePush(t *testing.T) {
	if *nativeFlag {
		t.Skip("the pure-Go queue's refusal; the native backend's seal is exercised by TestShutdownWhilePosting")
	}
	p := newPort(t, 1)
	require.NoError(t, p.Shutdown(context.Background()))
	// What the preempted Post does next: its push.
	assert.Equal(t, ring.Refused, p.push(&Packet{Key: "late"}, refusePost))
	assert.Zero(t, p.Stats().Queued)
}

func TestShutdownDeadline(t *testing.T) {
	p := newPort(t, 1)
	post(t, p, 1, 2, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	err := p.Shutdown(ctx) // no worker: the drain cannot finish
	require.True(t, errors.Is(err, context.DeadlineExceeded), "got %v", err)
	assert.Equal(t, 3, p.Stats().Queued, "nothing dropped")
}

// TestAssociateWhileClosing races Associate against Close: every Associate
// that returned a handle made one that Close closed, and every other one
// returned ErrClosed.
func TestAssociateWhileClosing(t *testing.T) {
	rounds := 200
	if testing.Short() {
		rounds = 50
	}
	for range rounds {
		p := newPort(t, 1)
		var mu sync.Mutex
		var made []*Handle
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				<-start
				for {
					h, err := p.Associate(&bytes.Buffer{}, i)
					if err != nil {
						assert.ErrorIs(t, err, ErrClosed)
						return
					}
					mu.Lock()
					made = append(made, h)
					mu.Unlock()
				}
			})
		}
		close(start)
		require.NoError(t, p.Close())
		wg.Wait()
		for _, h := range made {
			assert.ErrorIs(t, h.Close(), ErrHandleClosed, "Port.Close closed it")
		}
	}
}
