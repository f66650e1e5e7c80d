package iocp

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/iocp-go/iocp/internal/ring"
)

// ErrClosed is returned by every call on a closed port: Post, Port.Get,
// Worker.Get, Worker.GetBatch, Associate and the operations of its
// handles. Post, Accept and NewPool also return it once Shutdown has
// begun. Worker calls return it after Worker.Close as well.
var ErrClosed = errors.New("iocp: port closed")

// ErrQueueFull is returned by Post on a port made with WithQueueLimit whose
// queue holds that many packets. The packet was not queued.
var ErrQueueFull = errors.New("iocp: queue full")

// Stats is a snapshot of a port's counters. Under concurrent use each
// field is exact at the moment it was read, but the fields are read one
// after another.
type Stats struct {
	Concurrency int // the effective concurrency value
	Running     int // workers counted as runnable; may exceed Concurrency for a while (S30)
	Blocked     int // workers between Block and Unblock, and handlers a pool counts as blocked (WithStallAsBlocked)
	Waiting     int // calls parked in Get or GetBatch
	Queued      int // packets in the queue
	// Idle counts the idle workers, those in Running whose last Get,
	// TryGet or GetBatch returned no packet (see [Worker.Get]). A count that
	// stays above zero while packets are queued usually means a worker
	// that stopped calling Get without being closed.
	Idle int
	// Wakeups counts waiters released with a packet since the port was
	// made: each one is a parked goroutine woken, or one caught just before
	// it parked. A worker that takes a queued packet without waiting is
	// not counted.
	Wakeups uint64
	// Discarded counts the packets that Close dropped from the queue.
	Discarded uint64
	// NoWorker counts the calls of Blocking, in the whole process, whose
	// context carried no worker: their function ran, and no slot was
	// freed. It is the same in every port's Stats. A count that grows
	// usually means a handler that passed its request's context to
	// Blocking instead of the one its pool gave it (see Call).
	NoWorker uint64
}

// An Option configures a port made by NewPort.
type Option func(*config) error

type config struct {
	queueLimit int
	name       string
	follow     bool
	native     bool
}

// maxQueueLimit bounds WithQueueLimit: a bounded queue is allocated whole
// when the port is made, with two to four 64-byte cells a packet
// (internal/ring).
const maxQueueLimit = 1 << 24

// WithQueueLimit bounds the port's queue to n packets, 1 <= n <= 1<<24;
// a Post that finds n packets queued returns ErrQueueFull and queues
// nothing. The queue's memory, 128 to 256 bytes a packet (a power of
// two of 64-byte cells, at least twice n), is allocated when the port is
// made. Without this option the queue grows as needed and Post
// never blocks.
func WithQueueLimit(n int) Option {
	return func(c *config) error {
		if n < 1 || n > maxQueueLimit {
			return fmt.Errorf("iocp: queue limit %d out of range [1, %d]", n, maxQueueLimit)
		}
		c.queueLimit = n
		return nil
	}
}

// WithName names the port, for the labels and trace regions of its pool's
// workers (see Port.NewPool). The name must not be empty.
func WithName(name string) Option {
	return func(c *config) error {
		if name == "" {
			return errors.New("iocp: WithName with an empty name")
		}
		c.name = name
		return nil
	}
}

// A Port is a completion port: a FIFO queue of packets, the workers that
// take them, and a concurrency value that bounds how many of those workers
// run at once. See the package documentation for the model.
//
// The zero Port is not usable: make one with NewPort. A Port must not be
// copied. All its methods are safe for concurrent use.
type Port struct {
	// The gate (limiter.go): R, W and the draining and closed bits in one
	// word. Atomic operations only; W changes only with mu held. Every Get
	// and Block writes it: the padding keeps the queue's words off its line.
	gate atomic.Uint64
	_    [cacheLine - 8]byte

	// The queue and its clock. q is lock-free (internal/ring); NewPort
	// initializes it for the pure-Go port only. stamping is set once, by
	// a pool made WithTimings; epoch is read-only after NewPort.
	q        ring.Queue[Packet]
	stamping atomic.Bool // every push records its time (now), for a pool's queue-wait histogram
	epoch    time.Time   // what the times count from

	// What NewPort sets: read-only after it, but for concurrency, which
	// only the goroutine of a port that follows GOMAXPROCS stores (see
	// follow in runtime_hooks.go); every other access is a load.
	concurrency atomic.Int64 // the concurrency value C
	name        string
	native      *nativePort // nil for the pure-Go port

	// PostWait's room (postwait.go): an atomic and a channel, no lock.
	// posters is read by every pop, and written only by Posts that found
	// the queue full.
	posters atomic.Int64  // PostWait calls that wait for room
	room    chan struct{} // capacity 1: a pop made room while posters waited

	// The waiter stack (waiter.go), guarded by mu. mu also guards the
	// changes to W in gate and the Worker links, and serializes releases
	// so that they follow the stack's order exactly. Post and Get do not
	// take it while a packet or a slot is at hand.
	mu  sync.Mutex
	top *Worker // most recent waiter

	// Counters for Stats: atomics, each exact when it is read.
	blocked   atomic.Int64  // workers between Block and Unblock
	idle      atomic.Int64  // workers in stateIdle
	wakeups   atomic.Uint64 // waiters released
	discarded atomic.Uint64 // packets dropped by Close

	// Handles (associate.go): handles and handlesClosed are guarded by
	// hmu; associated is an atomic that turns true before any handle's
	// first operation, and never back.
	hmu           sync.Mutex
	handles       map[*Handle]struct{} // associated and not closed
	handlesClosed bool                 // closeHandles has run: Associate is refused
	associated    atomic.Bool          // a handle was ever associated: see settleAll

	// Shutdown's drain (drain.go): atomics and a channel, no lock; quiet
	// reads them in the order that drain.go argues. ops counts the
	// operations pending on the port's handles: all of them in the low 32
	// bits, those that complete by themselves in the high 32.
	ops       atomic.Uint64
	drainSeq  atomic.Uint64 // bumped by the moves quiet cannot follow, while draining
	drainWake chan struct{} // capacity 1: a token for a move worth a look

	// Lifecycle. sealed and pool are atomics; done is made by NewPort and
	// closed once, by the Close that sets the closed bit in gate; oneShots
	// is a sync.Pool.
	sealed atomic.Bool          // sealPosts has run: no packet can be queued any more
	pool   atomic.Pointer[Pool] // the pool that serves the port, if any: see discardQueued
	// ownWorkers counts the workers made by NewWorker, and Port.Get's,
	// that are not closed: a port has them or a pool (NewPool).
	ownWorkers atomic.Int64
	done       chan struct{} // closed by Close
	oneShots   sync.Pool     // *Worker for Port.Get
}

// cacheLine is the size that keeps two hot words from sharing a line.
// 128 covers the adjacent-line prefetch of x86 and the 128-byte lines of
// some arm64 parts.
const cacheLine = 128

// A Packet is at most 48 bytes, which makes the ring's cell (a sequence
// word, the packet and its tag) one 64-byte line on 64-bit platforms: see
// cell in internal/ring, which cannot pad a cell for a type parameter.
// This fails to compile if a field makes a Packet larger.
var _ [48 - unsafe.Sizeof(Packet{})]byte

// NewPort makes a port whose concurrency value is concurrency, or
// runtime.GOMAXPROCS(0) if concurrency is 0. The value is fixed for the
// port's life, unless a port made with 0 is given FollowGOMAXPROCS. A
// negative concurrency, or an invalid option, returns an error and no
// port.
func NewPort(concurrency int, opts ...Option) (*Port, error) {
	if concurrency < 0 || concurrency > maxConcurrency {
		return nil, fmt.Errorf("iocp: concurrency %d out of range [0, %d]", concurrency, maxConcurrency)
	}
	auto := concurrency == 0
	if auto {
		concurrency = runtime.GOMAXPROCS(0)
	}
	var c config
	for _, opt := range opts {
		if opt == nil {
			return nil, errors.New("iocp: nil Option")
		}
		if err := opt(&c); err != nil {
			return nil, err
		}
	}
	if c.follow && !auto {
		return nil, fmt.Errorf("iocp: FollowGOMAXPROCS with concurrency %d; it needs 0", concurrency)
	}
	if c.follow && c.native {
		return nil, errors.New("iocp: FollowGOMAXPROCS with WithNative: the kernel fixes a native port's concurrency value")
	}
	var native *nativePort
	if c.native {
		var err error
		if native, err = newNative(concurrency, c.queueLimit); err != nil {
			return nil, err
		}
	}
	p := &Port{
		name:      c.name,
		native:    native,
		done:      make(chan struct{}),
		drainWake: make(chan struct{}, 1),
		room:      make(chan struct{}, 1),
	}
	if p.name == "" {
		p.name = "port-" + strconv.FormatUint(portSeq.Add(1), 10)
	}
	p.concurrency.Store(int64(concurrency))
	p.epoch = time.Now()
	if native == nil {
		p.q.Init(c.queueLimit)
	}
	p.oneShots.New = func() any { return p.newWorker() }
	if c.follow {
		go p.follow()
	}
	return p, nil
}

// portSeq numbers the ports that were not named, for their default names.
var portSeq atomic.Uint64

// Concurrency returns the port's concurrency value.
func (p *Port) Concurrency() int { return int(p.concurrency.Load()) }

// Name returns the port's name: the one given to WithName, or "port-N",
// N counting the ports made without one. Pools label their workers with it
// (see Port.NewPool).
func (p *Port) Name() string { return p.name }

// Post queues pkt, unchanged, at the tail of the port's queue; the port
// then releases the most recent waiter with the oldest packet if fewer
// than Concurrency workers run. Post never blocks; on a port made with
// WithQueueLimit it returns ErrQueueFull when the queue is full. After Close
// or Shutdown it returns ErrClosed. Post is PostQueuedCompletionStatus.
//
// Memory model: a Post that returns nil is synchronized before the Get,
// TryGet or GetBatch that returns its packet (https://go.dev/ref/mem).
func (p *Port) Post(pkt Packet) error { return p.post(&pkt, refusePost) }

// post queues *pkt unless one of the refuse bits is set in the gate; see
// Post. Operations complete through it too, with fewer bits.
func (p *Port) post(pkt *Packet, refuse uint64) error {
	g := p.gate.Load()
	if g&refuse != 0 {
		return ErrClosed
	}
	if p.native != nil {
		if err := p.native.post(pkt); err != nil {
			return err
		}
		if p.starved(p.gate.Load()) {
			p.starve()
		}
		return nil
	}
	// A waiter can run and nothing is queued ahead: hand the packet over
	// without going through the ring.
	if p.canRelease(g) {
		if handed, err := p.handOff(pkt, refuse); handed || err != nil {
			return err
		}
	}
	switch p.push(pkt, refuse) {
	case ring.Full:
		return ErrQueueFull // the sentinel itself: a retry loop allocates nothing
	case ring.Refused:
		return ErrClosed // sealPosts has run, or it yielded and Close or Shutdown began meanwhile
	}
	// This load must come after the push: a waiter that registered before
	// it is seen here, one that registers after it sees the packet (see
	// limiter.go). A push that succeeds comes before Close's refuse, and so
	// before its sweep: a closed port's packets are all discarded and
	// counted there.
	if g = p.gate.Load(); p.canRelease(g) {
		p.release()
	} else if p.starved(g) {
		p.starve()
	}
	return nil
}

// push appends *pkt to the queue with the time it records (now) as its
// tag. A push that has had to yield its P (ring.Yielded) looks at the gate
// before trying again and gives up, with ring.Refused, if one of the
// refuse bits is set, so that it does not push after the close that it
// waited through.
func (p *Port) push(pkt *Packet, refuse uint64) ring.Result {
	at := p.now()
	for {
		if r := p.q.Push(pkt, at); r != ring.Yielded {
			return r
		}
		if p.gate.Load()&refuse != 0 {
			return ring.Refused
		}
	}
}

// pushN is push for the packets of pkts, in order (ring.Queue.PushN): it
// returns how many it pushed, and the result of the first it did not.
func (p *Port) pushN(pkts []Packet, refuse uint64) (int, ring.Result) {
	n := 0
	at := p.now()
	for {
		k, r := p.q.PushN(pkts[n:], at)
		n += k
		if r != ring.Yielded {
			return n, r
		}
		if p.gate.Load()&refuse != 0 {
			return n, ring.Refused
		}
	}
}

// now returns the time a push records: with stamping, one more than the
// nanoseconds from p.epoch, so that it is never 0; without, 0.
func (p *Port) now() int64 {
	if !p.stamping.Load() {
		return 0
	}
	return int64(time.Since(p.epoch)) + 1
}

// Get takes one packet as a worker that exists for this call only: it
// waits until a packet is queued and a slot is free, takes the packet, and
// is not counted as running once it returns (SPEC S35). A loop over
// Port.Get is therefore not bounded by the concurrency value: the work done
// with the packet runs outside the count. Use a Worker for that.
//
// Get returns ctx.Err() if ctx ends first, and ErrClosed if the port is
// closed. It panics on a port served by a Pool, as NewWorker does.
func (p *Port) Get(ctx context.Context) (Packet, error) {
	mustContext(ctx)
	p.mustHaveNoPool("Get")
	defer p.ownWorkers.Add(-1)
	w := p.oneShots.Get().(*Worker)
	pkt, err := w.Get(ctx)
	// Not counted after return: give the slot back (which may release a
	// waiter), and make the worker new again for the next call.
	w.Close()
	if err != ErrClosed {
		w.state.Store(stateNew)
		p.oneShots.Put(w)
	}
	return pkt, err
}

// NewWorker returns a worker of the port: the counterpart of a thread that
// calls GetQueuedCompletionStatus on it. A Worker belongs to one goroutine
// at a time. It is not counted as running until its first Get returns.
// Workers made after Close return ErrClosed from Get. NewWorker panics on
// a port served by a Pool, whose packets only the pool can handle.
func (p *Port) NewWorker() *Worker {
	p.mustHaveNoPool("NewWorker")
	w := p.newWorker()
	w.own = true
	return w
}

// mustHaveNoPool counts a worker of one's own, and panics if the port has
// a pool. The count comes before the load of pool, and NewPool's CAS of
// pool before its load of the count: of the two, one sees the other.
func (p *Port) mustHaveNoPool(call string) {
	p.ownWorkers.Add(1)
	if p.pool.Load() != nil {
		p.ownWorkers.Add(-1)
		panic("iocp: " + call + " on a port served by a Pool: its packets are the pool's")
	}
}

// newWorker returns a worker of the port that is not counted as one of
// its own: a pool's, or Port.Get's.
func (p *Port) newWorker() *Worker {
	w := &Worker{p: p, wake: make(chan struct{}, 1)}
	if p.native != nil {
		w.nw = new(nativeWorker)
	}
	return w
}

// Stats returns a snapshot of the port's counters.
func (p *Port) Stats() Stats {
	g := p.gate.Load()
	return Stats{
		Concurrency: p.Concurrency(),
		Running:     running(g),
		Blocked:     int(p.blocked.Load()),
		Waiting:     waiters(g),
		Queued:      p.queueLen(),
		Idle:        int(p.idle.Load()),
		Wakeups:     p.wakeups.Load(),
		Discarded:   p.discarded.Load(),
		NoWorker:    noWorker.Load(),
	}
}

// Close closes the port: every call parked in Get or GetBatch returns
// ErrClosed, the queued packets are discarded (Stats.Discarded counts them,
// as CloseHandle discards them on Windows), and later calls return
// ErrClosed. Close returns nil, at once and every time; it does not wait for
// workers that are running to call Get again.
//
// Memory model: Close is synchronized before every call that returns
// ErrClosed because of it.
func (p *Port) Close() error {
	if p.native != nil {
		return p.closeNative()
	}
	p.mu.Lock()
	g := p.gate.Load()
	if g&closedBit != 0 {
		p.mu.Unlock()
		return nil
	}
	for !p.gate.CompareAndSwap(g, (g|closedBit)&^waiterMask) {
		g = p.gate.Load()
	}
	for w := p.top; w != nil; {
		next := w.down
		w.up, w.down = nil, nil
		w.signal(resultClosed)
		w = next
	}
	p.top = nil
	close(p.done)
	p.mu.Unlock()
	// A Post that passed its check before the closed bit was set may still
	// be pushing: after refuse, it has either claimed its slot, and the
	// sweep below finds its packet, or it returns ErrClosed.
	p.sealPosts()
	p.discardQueued()
	p.closeHandles()
	return nil
}

// take pops up to len(dst) packets for a worker and returns how many, and
// the times the first len(at) of them were queued in at (their tags: see
// push). A pop that makes room while a PostWait waits for it says so
// (postwait.go).
func (p *Port) take(dst []Packet, at []int64) int {
	n := p.q.PopTags(dst, at)
	if n > 0 && p.posters.Load() != 0 {
		p.noteRoom()
	}
	return n
}

// discardQueued empties the queue of a closed port, counting the packets.
func (p *Port) discardQueued() {
	var buf [64]Packet
	for {
		n := p.q.PopN(buf[:])
		if n == 0 {
			return
		}
		pl := p.pool.Load()
		for i := range buf[:n] {
			if ov := buf[i].Overlapped; ov != nil {
				ov.discard()
			}
			if pl != nil {
				pl.dropped(&buf[i]) // a task that will never run
			}
		}
		clear(buf[:n])
		p.discarded.Add(uint64(n))
	}
}
