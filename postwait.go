package iocp

// Backpressure on a bounded queue, and posting several packets at once.
//
// PostWait waits for room without spinning: a Post that finds the queue
// full counts itself in posters, tries once more, and parks on the port's
// room channel. A pop (take) that makes room loads posters after its
// pop and, if anyone waits, leaves a token in room. Both counts are
// sequentially consistent atomics, so of the poster's retry and the pop's
// load at least one sees the other (the argument of limiter.go): either
// the retry finds the room, or the pop sends the token. The channel holds
// one token, so many pops may wake one poster; a poster that returns
// passes a token on while others wait, and so every waiting poster runs
// while there is room.

import (
	"context"
	"runtime"

	"github.com/iocp-go/iocp/internal/ring"
)

// PostWait is Post that waits for room: on a port made with
// WithQueueLimit whose queue is full, it waits until a worker takes a
// packet, ctx ends (ctx.Err()) or the port closes (ErrClosed), instead of
// returning ErrQueueFull. It does not spin while it waits. Without a queue
// limit it is Post. Like Post, it returns ErrClosed once Close or
// Shutdown has begun, and it is synchronized before the Get that returns
// its packet.
func (p *Port) PostWait(ctx context.Context, pkt Packet) error {
	mustContext(ctx)
	return p.postWait(ctx, &pkt, refusePost)
}

// postWait is PostWait with the given refuse bits; completions of
// operations use it to wait for room (complete).
func (p *Port) postWait(ctx context.Context, pkt *Packet, refuse uint64) error {
	err := p.post(pkt, refuse)
	// A full queue is often a consumer a few instructions behind: yield to
	// it a few times before paying for a park, as a waiter does.
	for range spinYields {
		if err != ErrQueueFull {
			return err
		}
		runtime.Gosched()
		err = p.post(pkt, refuse)
	}
	if err != ErrQueueFull {
		return err
	}
	p.posters.Add(1)
	defer p.posters.Add(-1)
	for {
		// After the count: a pop from here on leaves a token.
		if err := p.post(pkt, refuse); err != ErrQueueFull {
			p.passRoom()
			return err
		}
		select {
		case <-p.room:
		case <-ctx.Done():
			p.passRoom() // the token may have been another poster's
			return ctx.Err()
		case <-p.done:
			return ErrClosed
		}
	}
}

// noteRoom leaves a token for a waiting PostWait.
func (p *Port) noteRoom() {
	select {
	case p.room <- struct{}{}:
	default: // a token is there already
	}
}

// passRoom hands a token on if another PostWait waits (the caller is
// still counted in posters).
func (p *Port) passRoom() {
	if p.posters.Load() > 1 {
		p.noteRoom()
	}
}

// PostBatch queues the packets of pkts in order, as Post queues one, and
// returns how many it queued. Where the queue has a run of writable cells,
// it claims them with one atomic step; packets of other Posts may still come between
// its packets, but never reorder them. On a port made with
// WithQueueLimit it queues as many as fit and returns ErrQueueFull if
// that was not all of them. After Close or Shutdown began it returns
// ErrClosed, with the packets it had queued by then counted in n. An
// empty pkts queues nothing and returns 0, nil.
//
// Memory model: as for Post, for each packet.
func (p *Port) PostBatch(pkts []Packet) (n int, err error) {
	if p.native != nil { // the kernel takes one packet a call
		for n = range pkts {
			if err = p.post(&pkts[n], refusePost); err != nil {
				return n, err
			}
		}
		return len(pkts), nil
	}
	for n < len(pkts) {
		if refusing(p.gate.Load()) {
			return n, ErrClosed
		}
		k, res := p.pushN(pkts[n:], refusePost)
		n += k
		switch res {
		case ring.Full:
			err = ErrQueueFull
		case ring.Refused:
			err = ErrClosed
		}
		if err != nil {
			break
		}
	}
	// As in post: the load after the pushes.
	if g := p.gate.Load(); n > 0 && p.canRelease(g) {
		p.release()
	} else if n > 0 && p.starved(g) {
		p.starve()
	}
	return n, err
}
