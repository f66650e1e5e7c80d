package iocp

import (
	"math/bits"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"
)

// The packet queue: a lock-free multi-producer multi-consumer FIFO.
//
// Algorithm. Each segment is a bounded ring in the style of Dmitry Vyukov's
// bounded MPMC queue: every slot carries a sequence number that says which
// lap of the ring it is ready for, so producers and consumers agree on a slot
// with one compare-and-swap on their own index and never take a lock. The
// queue is a linked list of such segments (as in LCRQ, Morrison and Afek,
// PPoPP 2013): when a segment's ring is full, a producer seals it and links a
// new one. A segment is never reused once it is sealed, and none is recycled
// through sync.Pool, so a pointer to a segment can never come to mean
// another segment (no ABA); the garbage collector frees a drained segment
// once nobody holds it. While the queue holds fewer packets than its newest
// segment has slots, Post and Get go round that one ring and allocate nothing.
//
// Segment sizes double from minSegment up to maxSegment, so that a standing
// backlog larger than a segment settles into one ring that it fits in,
// instead of allocating a new segment every len(slots) packets.
//
// One change to Vyukov's queue: a consumer counts a slot as queued from the
// moment a producer claims it (tail moved past it), not from the moment the
// producer publishes it. A consumer that finds the slot at head claimed but
// not yet published takes it anyway and waits for the publication (see
// awaitPublished). That is what keeps a producer that is preempted between
// claiming a slot and publishing it from sending a consumer to sleep while a
// packet is ready: the consumer never parks on a queue whose tail is ahead of
// its head. It waits for the one producer it depends on, which is running
// or runnable, and every Post checks for waiters only after it has published
// (see Port.Post), so no wakeup is lost either.
//
// Invariants, for one segment s with size = len(s.slots):
//   - head <= tail (without the sealed bit): consumers claim only indexes that
//     producers have claimed.
//   - tail - head <= size.
//   - For the slot of index i (s.at(i)), whose sequence number seq is
//     stored less i&mask (slot.lap): seq == i means the slot is free
//     for the producer of i; seq == i+1 means the packet of index i is
//     published and belongs to the consumer of i. Once that consumer has
//     copied it out, it frees the slot for the producer of i+size in one
//     of two ways: it stores seq = i+size, or, for a batch, it moves the
//     watermark freed past i (see freeRange).
//   - freed <= head, and every index below freed is copied out. A slot
//     whose seq is i+1 (a lap old) and whose index i is below freed is
//     free for the producer of i+size.
//   - Once tail has the sealed bit, it never changes again and s.next is set
//     (or about to be set by the producer that sealed it, or the one that
//     lost the race to it).
//   - Indexes are 63-bit counters that start at 0 in every segment; at one
//     packet a nanosecond they would overflow after 292 years.

const (
	minSegment = 256     // slots in a port's first segment
	maxSegment = 1 << 16 // slots in the largest segment (4 MiB: a slot is 64 bytes)

	sealed = 1 << 63 // tail bit: the segment takes no more packets

	// cacheLine is the size that keeps two hot words from sharing a line.
	// 128 covers the adjacent-line prefetch of x86 and the 128-byte lines of
	// some arm64 parts.
	cacheLine = 128
)

type slot struct {
	// lap is the slot's sequence number (see the invariants) less the
	// index's place in the ring, i&mask, which is the same for every index
	// the slot serves: for index i the sequence number is lap + i&mask
	// (seq and setSeq). A zeroed slot is then free for its lap-0 index, and
	// a new segment needs no pass over its slots before it is used.
	lap atomic.Uint64
	pkt Packet // owned by whoever the seq hands it to
	at  int64  // when pkt was pushed (queue.now); with pkt
	_   [64 - 16 - unsafe.Sizeof(Packet{})]byte
}

// A segment is one ring of the queue. head and tail each sit on a cache
// line of their own: producers write tail and consumers write head, and on
// one shared line every Post would steal the line from every Get.
type segment struct {
	head atomic.Uint64 // next index to consume; written by consumers (CAS)
	_    [cacheLine - 8]byte
	tail atomic.Uint64 // next index to produce, | sealed; written by producers (CAS)
	// headSeen is a value head had, on the producers' line: a bounded
	// push compares with it and loads head, the consumers' line, only
	// when it says full. Producers store what they load, so it may go
	// back; it is never ahead of head, and so never understates.
	headSeen atomic.Uint64
	_        [cacheLine - 16]byte
	freed    atomic.Uint64 // every index below it is copied out; written by batch consumers (CAS)
	_        [cacheLine - 8]byte
	next     atomic.Pointer[segment] // the following segment; set once, after tail is sealed
	mask     uint64                  // len(slots)-1; read-only
	spread   uint                    // log2 of how many lines apart consecutive indexes sit
	shift    uint                    // log2(len(slots)) - spread
	slots    []slot                  // read-only slice header
}

// at returns the slot of index i. Consecutive indexes sit on slots
// len(slots)>>spread apart, so that producers (and consumers) working on
// neighbouring indexes at the same time do not share a cache line.
func (s *segment) at(i uint64) *slot {
	i &= s.mask
	return &s.slots[(i&(1<<s.spread-1))<<s.shift|i>>s.spread]
}

// seq returns the sequence number of sl, the slot of index i (or of any
// index a whole number of laps from i).
func (s *segment) seq(sl *slot, i uint64) uint64 { return sl.lap.Load() + i&s.mask }

// setSeq stores v as the sequence number of sl, the slot of index i.
func (s *segment) setSeq(sl *slot, i, v uint64) { sl.lap.Store(v - i&s.mask) }

// newSegment returns an empty segment of size slots. Its zeroed slots are
// each free for their lap-0 index (see slot.lap).
func newSegment(size int) *segment {
	s := &segment{mask: uint64(size - 1), slots: make([]slot, size)}
	log := uint(bits.TrailingZeros(uint(size)))
	s.spread = min(3, log)
	s.shift = log - s.spread
	return s
}

// queue is the port's packet FIFO. Its zero value is not usable: see init.
type queue struct {
	head atomic.Pointer[segment] // the segment consumers take from
	_    [cacheLine - 8]byte
	tail atomic.Pointer[segment] // the segment producers put into
	_    [cacheLine - 8]byte
	// limit bounds the number of queued packets; 0 means unbounded. A bounded
	// queue is one segment that is never sealed.
	limit uint64
	// maxSeg is the size segments stop doubling at; read-only. Tests make
	// it small to reach sealing and relinking quickly.
	maxSeg int
	// gate, if not nil, is the port's gate word (limiter.go). A push that
	// has had to yield its P looks at it before trying again and gives up
	// if one of the bits it was given is set, so that it does not push
	// after the close that it waited through; read-only.
	gate *atomic.Uint64
	// stamping has every push record its time, for a pool's queue-wait
	// histogram (WithTimings); set once. epoch is what the times count
	// from; read-only.
	stamping atomic.Bool
	epoch    time.Time
}

// now returns the time a push records: with stamping, one more than the
// nanoseconds from q.epoch, so that it is never 0; without, 0.
func (q *queue) now() int64 {
	if !q.stamping.Load() {
		return 0
	}
	return int64(time.Since(q.epoch)) + 1
}

func (q *queue) init(limit int) { q.initSizes(limit, minSegment, maxSegment) }

// initSizes is init with the first and the largest segment size, both
// powers of two and at least 2.
func (q *queue) initSizes(limit, first, max int) {
	size := first
	q.maxSeg = max
	if limit > 0 {
		// Twice the slots the limit needs, so that a full queue's producer
		// writes slots its consumers freed half a ring ago, not the one
		// they are freeing now: at exactly the limit, every Post of a full
		// queue took the line a Get had just written. (Also at least two
		// slots: in a ring of one, a published slot, seq i+1, would look
		// free for the next lap, seq i+size.)
		size = 2
		for size < 2*limit {
			size <<= 1
		}
		q.limit = uint64(limit)
	}
	s := newSegment(size)
	q.head.Store(s)
	q.tail.Store(s)
}

// push appends *pkt. It returns full when the queue is bounded and full,
// and aborted when it had to wait and then found one of the refuse bits
// set in q.gate, or when the queue refuses pushes (refuse); in each case
// it has changed nothing.
func (q *queue) push(pkt *Packet, refuse uint64) pushResult {
	at := q.now()
	for {
		s := q.tail.Load()
		switch r := s.push(pkt, at, q.limit); r {
		case yielded:
			if q.gate != nil && q.gate.Load()&refuse != 0 {
				return aborted
			}
			continue
		case sealedSeg:
		default:
			return r
		}
		// s is sealed: move to the next segment, linking one if need be.
		next := s.next.Load()
		if next == closedSeg {
			return aborted
		}
		if next == nil {
			size := min(2*len(s.slots), q.maxSeg)
			n := newSegment(size)
			// Place the packet in the new segment before linking it, so that
			// the producer that links a segment cannot be overtaken on it.
			n.at(0).pkt = *pkt
			n.at(0).at = at
			n.setSeq(n.at(0), 0, 1)
			n.tail.Store(1)
			if s.next.CompareAndSwap(nil, n) {
				// Linking n is this Post's linearization point, and the
				// store publishes slot 0 to the consumer that claims it.
				q.tail.CompareAndSwap(s, n)
				return pushed
			}
			next = s.next.Load() // another producer linked first, or refuse; n is garbage
			if next == closedSeg {
				return aborted
			}
		}
		q.tail.CompareAndSwap(s, next)
	}
}

// pushN appends packets of pkts, in order, and returns how many: it
// claims the run of free slots at the tail segment's end with one CAS, and
// pushes one at a time (push) where no run is free. It stops at the first
// packet push refuses, with that result; otherwise it returns pushed.
func (q *queue) pushN(pkts []Packet, refuse uint64) (int, pushResult) {
	n := 0
	at := q.now()
	for n < len(pkts) {
		if k := q.tail.Load().pushRun(pkts[n:], at, q.limit); k > 0 {
			n += k
			continue
		}
		if r := q.push(&pkts[n], refuse); r != pushed {
			return n, r
		}
		n++
	}
	return n, pushed
}

type pushResult int

const (
	pushed    pushResult = iota
	full                 // bounded queue at its limit
	aborted              // yielded, and the port is closing
	sealedSeg            // segment sealed; go to the next
	yielded              // yielded its P: look at the gate, then try again
)

func (s *segment) push(pkt *Packet, at int64, limit uint64) pushResult {
	size := uint64(len(s.slots))
	spins := 0
	for {
		t := s.tail.Load()
		if t&sealed != 0 {
			return sealedSeg
		}
		sl := s.at(t)
		seq := s.seq(sl, t)
		// Free for index t: its consumer freed it (seq == t), or a batch
		// consumer did, with the watermark. Loading freed after seeing the
		// lap-old seq synchronizes with that consumer's CAS, which came
		// after its copy.
		switch {
		case seq == t || seq == t-size+1 && t-size < s.freed.Load():
			if limit != 0 && s.room(t, limit) == 0 {
				return full
			}
			if !s.tail.CompareAndSwap(t, t+1) {
				if spins = backoff(spins); spins > backoffSpins {
					return yielded
				}
			} else {
				sl.pkt, sl.at = *pkt, at
				// Publishes pkt: this store hands the slot to the consumer
				// of index t, whose load of seq == t+1 synchronizes with it.
				s.setSeq(sl, t, t+1)
				return pushed
			}
		case seq < t: // the slot still holds index t-size
			if h := s.head.Load(); h <= t && t-h >= size { // h > t: t is stale
				// No consumer has claimed index t-size: the ring is full.
				if limit != 0 {
					return full
				}
				s.tail.CompareAndSwap(t, t|sealed)
				continue
			}
			// A consumer claimed t-size and is copying it out, which takes
			// a few stores; it may have been preempted in between.
			runtime.Gosched()
			return yielded
		default: // seq > t: another producer claimed t after our load
		}
	}
}

// pushRun claims the free slots from s's tail on, as many as pkts has,
// with one CAS, and copies pkts into them; it returns how many, 0 where
// the slot at the tail is not free (or s is sealed, or the bound is
// reached), which push then sorts out. A slot free for this lap stays
// free until the tail passes it: only the producer that claims an index
// writes its slot.
func (s *segment) pushRun(pkts []Packet, at int64, limit uint64) int {
	size := uint64(len(s.slots))
	spins := 0
	for {
		t := s.tail.Load()
		if t&sealed != 0 {
			return 0
		}
		k := min(uint64(len(pkts)), size)
		if limit != 0 {
			k = min(k, s.room(t, limit)) // 0 when full
		}
		freed := s.freed.Load()
		n := uint64(0)
		for ; n < k; n++ {
			i := t + n
			seq := s.seq(s.at(i), i)
			if seq != i && !(seq == i-size+1 && i-size < freed) {
				break
			}
		}
		if n == 0 {
			return 0
		}
		if !s.tail.CompareAndSwap(t, t+n) {
			// Another producer claimed t: look again, or leave it to push.
			if spins = backoff(spins); spins > backoffSpins {
				return 0
			}
			continue
		}
		for j := range n {
			sl := s.at(t + j)
			sl.pkt, sl.at = pkts[j], at
			// Publishes the packet, as in push.
			s.setSeq(sl, t+j, t+j+1)
		}
		return int(n)
	}
}

// room returns how many more packets a bounded segment takes at tail t,
// which the caller loaded before: 0 if it holds limit packets. The head
// is loaded after t, so t-head can only overstate how many are queued, and
// 0 is never spurious; a head past t means that t is stale, and the
// caller's CAS on it fails: room then returns 1, to let it find out.
func (s *segment) room(t, limit uint64) uint64 {
	if h := s.headSeen.Load(); h <= t && t-h < limit {
		return limit - (t - h)
	}
	h := s.head.Load()
	s.headSeen.Store(h)
	switch {
	case h > t:
		return 1
	case t-h >= limit:
		return 0
	}
	return limit - (t - h)
}

type popResult int

const (
	popped popResult = iota
	empty
	drained // sealed and every index consumed: go to the next segment
)

// popN removes up to len(dst) oldest packets into dst and returns how
// many. It takes what is queued at the moment and never waits for more.
func (q *queue) popN(dst []Packet) int { return q.popAt(dst, nil) }

// popAt is popN that also stores, for each of the first len(at) packets
// it returns, the time it was pushed (queue.now) in at.
func (q *queue) popAt(dst []Packet, at []int64) int {
	n := 0
	for n < len(dst) {
		s := q.head.Load()
		k, res := s.popN(dst[n:], at[min(n, len(at)):])
		n += k
		if res != drained {
			if k == 0 {
				return n
			}
			continue
		}
		next := s.next.Load()
		if next == nil || next == closedSeg {
			// Sealed, and the producer that sealed it has not linked the
			// next segment yet: its Post has not taken effect. Or the
			// queue refuses pushes, and this was its last segment.
			return n
		}
		q.head.CompareAndSwap(s, next)
	}
	return n
}

// popN claims up to len(dst) indexes of s with one CAS on head and copies
// their packets to dst. It reports drained when s is sealed and exhausted.
func (s *segment) popN(dst []Packet, at []int64) (int, popResult) {
	spins := 0
	for {
		h := s.head.Load()
		// Fast path for one packet: the slot at head is published, so a
		// packet is there without a look at tail, which producers keep
		// writing.
		n := uint64(1)
		if len(dst) > 1 || s.seq(s.at(h), h) != h+1 {
			t := s.tail.Load()
			// h was loaded first and head <= tail always, so h <= t here.
			if h == t&^sealed {
				if t&sealed != 0 {
					return 0, drained
				}
				return 0, empty
			}
			n = min(t&^sealed-h, uint64(len(dst)))
		}
		if !s.head.CompareAndSwap(h, h+n) {
			spins = backoff(spins)
			continue
		}
		// Indexes h .. h+n-1 are ours; their producers have claimed them
		// (h+n <= tail) and may still be writing.
		size := uint64(len(s.slots))
		for i := range dst[:n] {
			idx := h + uint64(i)
			sl := s.at(idx)
			if s.seq(sl, idx) != idx+1 { // checked here: awaitPublished is not inlined
				s.awaitPublished(sl, idx)
			}
			dst[i] = sl.pkt
			if i < len(at) {
				at[i] = sl.at
			}
			sl.pkt = Packet{} // let the garbage collector have what it referred to
		}
		if n == 1 || !s.freeRange(h, h+n) {
			for idx := h; idx < h+n; idx++ {
				// Frees the slot for the producer of idx+size; the copy
				// above happens before that producer's write.
				s.setSeq(s.at(idx), idx, idx+size)
			}
		}
		return int(n), popped
	}
}

// freeRange frees the copied-out indexes [h, e) with one CAS on the
// watermark instead of one atomic store a slot, which is what makes
// GetBatch cheap: in Go every atomic store is a full barrier. It succeeds
// when every index below h is freed already: the watermark is at h, or
// the slots between it and h were freed one by one (their seq says so), and
// it reports whether it did. Otherwise, an earlier index is still being
// copied out, and the caller frees its slots one by one; the watermark may
// lag behind for ever, which costs later batches a scan, never a wait.
func (s *segment) freeRange(h, e uint64) bool {
	size := uint64(len(s.slots))
	f := s.freed.Load()
	g := f
	for g < h && s.seq(s.at(g), g) == g+size {
		g++
	}
	if g < h {
		if g > f {
			s.freed.CompareAndSwap(f, g) // keep the next scan short
		}
		return false
	}
	return s.freed.CompareAndSwap(f, e)
}

// awaitPublished waits until sl, the slot of index i, is published: the
// producer that claimed it has stored its packet. That producer is between
// two adjacent statements of segment.push, so the wait is short unless it
// was preempted; then yielding lets it run.
func (s *segment) awaitPublished(sl *slot, i uint64) {
	for n := 0; s.seq(sl, i) != i+1; n++ {
		if n >= 16 {
			runtime.Gosched()
		}
	}
}

// closedSeg follows the last segment of a queue that refuses pushes: a
// push that finds it returns aborted and links nothing after it, and a pop
// that reaches it has reached the end. It is sealed and empty, shared by
// every queue, and never written.
var closedSeg = func() *segment {
	s := newSegment(2)
	s.tail.Store(sealed)
	return s
}()

// refuse makes every later push return aborted. Every push that returns
// pushed, before or during refuse, has claimed its index by the time
// refuse returns, so that a pop after it finds the packet (a claimed
// index counts as queued). It is called once.
//
// A push succeeds by a CAS on an unsealed segment's tail, or by linking a
// segment after a sealed one. refuse seals the last segment, then links
// closedSeg after it: a push that links first makes that CAS fail, and
// refuse seals the segment it linked, whose packet is already in it.
func (q *queue) refuse() {
	s := q.tail.Load()
	for {
		for n := s.next.Load(); n != nil; n = s.next.Load() {
			if n == closedSeg {
				return
			}
			s = n
		}
		s.tail.Or(sealed)
		if s.next.CompareAndSwap(nil, closedSeg) {
			return
		}
	}
}

// empty reports whether no packet is queued or being published. A claimed
// but unpublished slot counts as queued: see the comment at the top.
func (q *queue) empty() bool {
	for s := q.head.Load(); s != nil; s = s.next.Load() {
		if s.head.Load() < s.tail.Load()&^sealed {
			return false
		}
	}
	return true
}

// len returns the number of packets queued, for Stats. Under concurrent
// use it is a snapshot of each segment in turn, not of the whole queue.
func (q *queue) len() int {
	n := 0
	for s := q.head.Load(); s != nil; s = s.next.Load() {
		h, t := s.head.Load(), s.tail.Load()&^sealed
		if t > h {
			n += int(t - h)
		}
	}
	return n
}

// backoff is called after a lost CAS on head or tail. Another goroutine
// is working on the same word, and retrying at once takes the line from
// it again, so that neither makes progress at the speed of one core: each
// loss in a row waits twice as long, and after backoffSpins losses the
// goroutine yields its P instead. The yield matters most when there are
// more runnable goroutines than Ps, which is the rule for a port (more
// producers and workers than cores): it hands the core to a goroutine on
// the other side of the queue (BenchmarkManyGated measures it; see
// bench/README.md). On many cores the spins come first so that short
// collisions do not all go through the scheduler's global run queue.
//
// It is kept out of line, away from the fast paths it is called from, and
// returns the count of losses so far.
//
//go:noinline
func backoff(n int) int {
	n++
	if n <= backoffSpins {
		for range 8 << n { // 16, 32, 64 iterations: a few hundred cycles
		}
		return n
	}
	runtime.Gosched()
	return n
}

const backoffSpins = 3
