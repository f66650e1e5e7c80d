// Package ring is the iocp port's packet queue: a lock-free
// multi-producer multi-consumer FIFO of values of any type, each with an
// int64 tag that the queue carries beside it and does not interpret.
// Its exported names are for package iocp only.
package ring

import (
	"math/bits"
	"runtime"
	"sync/atomic"
)

// The queue: a lock-free multi-producer multi-consumer FIFO.
//
// Algorithm. Each segment is a bounded ring in the style of Dmitry Vyukov's
// bounded MPMC queue: every cell carries a sequence number that says which
// lap of the ring it is ready for, so producers and consumers agree on a cell
// with one compare-and-swap on their own index and never take a lock. The
// queue is a linked list of such segments (as in LCRQ, Morrison and Afek,
// PPoPP 2013): when a segment's ring is full, a producer seals it and links a
// new one. A segment is never reused once it is sealed, and none is recycled
// through sync.Pool, so a pointer to a segment can never come to mean
// another segment (no ABA); the garbage collector reclaims a drained segment
// once nobody holds it. While the queue holds fewer values than its newest
// segment has cells, pushes and pops go round that one ring and allocate
// nothing.
//
// Segment sizes double from minSegment up to maxSegment, so that a standing
// backlog larger than a segment settles into one ring that it fits in,
// instead of allocating a new segment every len(cells) values.
//
// One change to Vyukov's queue: a consumer counts a cell as queued from the
// moment a producer claims it (tail moved past it), not from the moment the
// producer publishes it. A consumer that finds the cell at head claimed but
// not yet published takes it anyway and waits for the publication (see
// awaitPublished). That is what keeps a producer that is preempted between
// claiming a cell and publishing it from sending a consumer to sleep while a
// value is ready: the consumer never parks on a queue whose tail is ahead of
// its head. It waits for the one producer it depends on, which is running
// or runnable, and a caller that checks for waiters only after Push has
// returned (the port's Post does) loses no wakeup either.
//
// Invariants, for one segment s with size = len(s.cells):
//   - head <= tail (without the sealed bit): consumers claim only indexes that
//     producers have claimed.
//   - tail - head <= size.
//   - For the cell of index i (s.cellOf(i)), whose sequence number seq is
//     stored less i&mask (cell.lap): seq == i means the cell is writable
//     by the producer of i; seq == i+1 means the value of index i is
//     published and belongs to the consumer of i. Once that consumer has
//     copied it out, it recycles the cell for the producer of i+size in
//     one of two ways: it stores seq = i+size, or, for a batch, it moves
//     the watermark recycled past i (see recycleRange).
//   - recycled <= head, and every index below recycled is copied out. A cell
//     whose seq is i+1 (a lap old) and whose index i is below recycled is
//     writable by the producer of i+size.
//   - Once tail has the sealed bit, it never changes again and s.next is set
//     (or about to be set by the producer that sealed it, or the one that
//     lost the race to it).
//   - Indexes are 63-bit counters that start at 0 in every segment; at one
//     value a nanosecond they would overflow after 292 years.

const (
	minSegment = 256     // cells in a queue's first segment
	maxSegment = 1 << 16 // cells in the largest segment (4 MiB of the port's 64-byte cells)

	sealed = 1 << 63 // tail bit: the segment takes no more values

	// cacheLine is the size that keeps two hot words from sharing a line.
	// 128 covers the adjacent-line prefetch of x86 and the 128-byte lines of
	// some arm64 parts.
	cacheLine = 128
)

// A cell holds one value and its tag. For the port's element, a 48-byte
// iocp.Packet, it is 8+48+8 = 64 bytes, a cache line: with the spread of
// consecutive indexes (segment.cellOf), producers and consumers of
// neighbouring indexes do not share a line. The ring cannot pad it to 64
// bytes for other element types: an array length must be a constant, and
// unsafe.Sizeof of a type parameter is not one. For another T the cell is
// whatever size T makes it; the queue is as correct, only lines may be
// shared. (The iocp package checks that a Packet is no larger than 48
// bytes, and this package's tests that such an element makes a 64-byte
// cell.)
type cell[T any] struct {
	// lap is the cell's sequence number (see the invariants) less the
	// index's place in the ring, i&mask, which is the same for every index
	// the cell serves: for index i the sequence number is lap + i&mask
	// (seq and setSeq). A zeroed cell is then writable by its lap-0 index, and
	// a new segment needs no pass over its cells before it is used.
	lap atomic.Uint64
	v   T     // owned by whoever the seq hands it to
	tag int64 // the caller's tag for v, given to Push; with v
}

// A segment is one ring of the queue. head and tail each sit on a cache
// line of their own: producers write tail and consumers write head, and on
// one shared line every push would steal the line from every pop.
type segment[T any] struct {
	head atomic.Uint64 // next index to consume; written by consumers (CAS)
	_    [cacheLine - 8]byte
	tail atomic.Uint64 // next index to produce, | sealed; written by producers (CAS)
	// headSeen is a value head had, on the producers' line: a bounded
	// push compares with it and loads head, the consumers' line, only
	// when it says full. Producers store what they load, so it may go
	// back; it is never ahead of head, and so never understates.
	headSeen atomic.Uint64
	_        [cacheLine - 16]byte
	recycled atomic.Uint64 // every index below it is copied out; written by batch consumers (CAS)
	_        [cacheLine - 8]byte
	next     atomic.Pointer[segment[T]] // the following segment; set once, after tail is sealed
	mask     uint64                     // len(cells)-1; read-only
	spread   uint                       // log2 of how many lines apart consecutive indexes sit
	shift    uint                       // log2(len(cells)) - spread
	cells    []cell[T]                  // read-only slice header
}

// cellOf returns the cell of index i. Consecutive indexes sit on cells
// len(cells)>>spread apart, so that producers (and consumers) working on
// neighbouring indexes at the same time do not share a cache line.
func (s *segment[T]) cellOf(i uint64) *cell[T] {
	i &= s.mask
	return &s.cells[(i&(1<<s.spread-1))<<s.shift|i>>s.spread]
}

// seq returns the sequence number of c, the cell of index i (or of any
// index a whole number of laps from i).
func (s *segment[T]) seq(c *cell[T], i uint64) uint64 { return c.lap.Load() + i&s.mask }

// setSeq stores v as the sequence number of c, the cell of index i.
func (s *segment[T]) setSeq(c *cell[T], i, v uint64) { c.lap.Store(v - i&s.mask) }

// newSegment returns an empty segment of size cells. Its zeroed cells are
// each writable by their lap-0 index (see cell.lap).
func newSegment[T any](size int) *segment[T] {
	s := &segment[T]{mask: uint64(size - 1), cells: make([]cell[T], size)}
	log := uint(bits.TrailingZeros(uint(size)))
	s.spread = min(3, log)
	s.shift = log - s.spread
	return s
}

// A Queue is a FIFO of values of type T, each with an int64 tag.
//
// The zero Queue is not usable: call Init first, once. A Queue must not be
// copied after Init. Push, PushN, PopN, PopTags, Refuse, Empty and Len are
// safe for concurrent use, by any number of producers and consumers.
//
// Memory model: a Push or PushN that returns a value in the queue is
// synchronized before the PopN or PopTags that returns that value
// (https://go.dev/ref/mem): what the producer wrote before the push, the
// consumer sees after the pop.
type Queue[T any] struct {
	head atomic.Pointer[segment[T]] // the segment consumers take from
	_    [cacheLine - 8]byte
	tail atomic.Pointer[segment[T]] // the segment producers put into
	_    [cacheLine - 8]byte
	// limit bounds the number of queued values; 0 means unbounded. A bounded
	// queue is one segment that is never sealed.
	limit uint64
	// maxSeg is the size segments stop doubling at; read-only. Tests make
	// it small to reach sealing and relinking quickly.
	maxSeg int
	// closed follows the last segment once the queue refuses pushes (see
	// Refuse); read-only after Init.
	closed *segment[T]
}

// Init makes q an empty queue that holds at most limit values, or any
// number if limit is 0. A bounded queue allocates its ring whole: the
// power of two of cells at least twice limit (at least 2). It must be
// called once, before any other method.
func (q *Queue[T]) Init(limit int) { q.initSizes(limit, minSegment, maxSegment) }

// initSizes is Init with the first and the largest segment size, both
// powers of two and at least 2.
func (q *Queue[T]) initSizes(limit, first, max int) {
	size := first
	q.maxSeg = max
	if limit > 0 {
		// Twice the cells the limit needs, so that a full queue's producer
		// writes cells its consumers recycled half a ring ago, not the one
		// they are recycling now: at exactly the limit, every push to a full
		// queue took the line a pop had just written. (Also at least two
		// cells: in a ring of one, a published cell, seq i+1, would look
		// writable by the next lap, seq i+size.)
		size = 2
		for size < 2*limit {
			size <<= 1
		}
		q.limit = uint64(limit)
	}
	s := newSegment[T](size)
	q.head.Store(s)
	q.tail.Store(s)
	q.closed = newSegment[T](2)
	q.closed.tail.Store(sealed)
}

// Push appends *v with tag. It returns Pushed, or, having changed nothing:
// Full when the queue is bounded and full; Refused when the queue refuses
// pushes (Refuse); Yielded when it lost races on the tail, or found a
// consumer in the middle of recycling the cell, and yielded its P. The
// queue retries nothing after a yield: the caller decides whether to
// call Push again.
func (q *Queue[T]) Push(v *T, tag int64) Result {
	for {
		s := q.tail.Load()
		switch r := s.push(v, tag, q.limit); r {
		case sealedSeg:
		default:
			return r
		}
		// s is sealed: move to the next segment, linking one if need be.
		next := s.next.Load()
		if next == q.closed {
			return Refused
		}
		if next == nil {
			size := min(2*len(s.cells), q.maxSeg)
			n := newSegment[T](size)
			// Place the value in the new segment before linking it, so that
			// the producer that links a segment cannot be overtaken on it.
			n.cellOf(0).v = *v
			n.cellOf(0).tag = tag
			n.setSeq(n.cellOf(0), 0, 1)
			n.tail.Store(1)
			if s.next.CompareAndSwap(nil, n) {
				// Linking n is this push's linearization point, and the
				// store publishes cell 0 to the consumer that claims it.
				q.tail.CompareAndSwap(s, n)
				return Pushed
			}
			next = s.next.Load() // another producer linked first, or Refuse; n is garbage
			if next == q.closed {
				return Refused
			}
		}
		q.tail.CompareAndSwap(s, next)
	}
}

// PushN appends the values of vs, in order and each with tag, and returns
// how many: it claims the run of writable cells at the tail segment's end
// with one CAS, and pushes one at a time (Push) where no run is
// writable. It stops
// at the first value Push does not take, with Push's result, having
// pushed the values before it; otherwise it returns len(vs), Pushed.
// Values of other pushes may come between its values, but never reorder
// them.
func (q *Queue[T]) PushN(vs []T, tag int64) (int, Result) {
	n := 0
	for n < len(vs) {
		if k := q.tail.Load().pushRun(vs[n:], tag, q.limit); k > 0 {
			n += k
			continue
		}
		if r := q.Push(&vs[n], tag); r != Pushed {
			return n, r
		}
		n++
	}
	return n, Pushed
}

// A Result is what Push and PushN report.
type Result int

const (
	// Pushed: the value is in the queue.
	Pushed Result = iota
	// Full: the queue is bounded and holds its limit.
	Full
	// Refused: the queue refuses pushes (Refuse).
	Refused
	// Yielded: the push yielded its P and changed nothing; it may be
	// tried again.
	Yielded

	sealedSeg // segment sealed; go to the next (segment.push only)
)

func (s *segment[T]) push(v *T, tag int64, limit uint64) Result {
	size := uint64(len(s.cells))
	spins := 0
	for {
		t := s.tail.Load()
		if t&sealed != 0 {
			return sealedSeg
		}
		c := s.cellOf(t)
		seq := s.seq(c, t)
		// Writable by index t: its consumer recycled it (seq == t), or a batch
		// consumer did, with the watermark. Loading recycled after seeing the
		// lap-old seq synchronizes with that consumer's CAS, which came
		// after its copy.
		switch {
		case seq == t || seq == t-size+1 && t-size < s.recycled.Load():
			if limit != 0 && s.room(t, limit) == 0 {
				return Full
			}
			if !s.tail.CompareAndSwap(t, t+1) {
				if spins = backoff(spins); spins > backoffSpins {
					return Yielded
				}
			} else {
				c.v, c.tag = *v, tag
				// Publishes v: this store hands the cell to the consumer
				// of index t, whose load of seq == t+1 synchronizes with it.
				s.setSeq(c, t, t+1)
				return Pushed
			}
		case seq < t: // the cell still holds index t-size
			if h := s.head.Load(); h <= t && t-h >= size { // h > t: t is stale
				// No consumer has claimed index t-size: the ring is full.
				if limit != 0 {
					return Full
				}
				s.tail.CompareAndSwap(t, t|sealed)
				continue
			}
			// A consumer claimed t-size and is copying it out, which takes
			// a few stores; it may have been preempted in between.
			runtime.Gosched()
			return Yielded
		default: // seq > t: another producer claimed t after our load
		}
	}
}

// pushRun claims the writable cells from s's tail on, as many as vs has,
// with one CAS, and copies vs into them; it returns how many, 0 where
// the cell at the tail is not writable (or s is sealed, or the bound is
// reached), which push then sorts out. A cell writable for this lap
// stays so until the tail passes it: only the producer that claims an index
// writes its cell.
func (s *segment[T]) pushRun(vs []T, tag int64, limit uint64) int {
	size := uint64(len(s.cells))
	spins := 0
	for {
		t := s.tail.Load()
		if t&sealed != 0 {
			return 0
		}
		k := min(uint64(len(vs)), size)
		if limit != 0 {
			k = min(k, s.room(t, limit)) // 0 when full
		}
		recycled := s.recycled.Load()
		n := uint64(0)
		for ; n < k; n++ {
			i := t + n
			seq := s.seq(s.cellOf(i), i)
			if seq != i && !(seq == i-size+1 && i-size < recycled) {
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
			c := s.cellOf(t + j)
			c.v, c.tag = vs[j], tag
			// Publishes the value, as in push.
			s.setSeq(c, t+j, t+j+1)
		}
		return int(n)
	}
}

// room returns how many more values a bounded segment takes at tail t,
// which the caller loaded before: 0 if it holds limit values. The head
// is loaded after t, so t-head can only overstate how many are queued, and
// 0 is never spurious; a head past t means that t is stale, and the
// caller's CAS on it fails: room then returns 1, to let it find out.
func (s *segment[T]) room(t, limit uint64) uint64 {
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

// PopN removes up to len(dst) oldest values into dst and returns how
// many. It takes what is queued at the moment and never waits for more;
// a value whose producer has claimed its cell but not yet stored it counts
// as queued, and PopN waits the moment that producer takes to store it.
func (q *Queue[T]) PopN(dst []T) int { return q.PopTags(dst, nil) }

// PopTags is PopN that also stores, for each of the first len(tags) values
// it returns, the tag it was pushed with in tags.
func (q *Queue[T]) PopTags(dst []T, tags []int64) int {
	n := 0
	for n < len(dst) {
		s := q.head.Load()
		k, res := s.popN(dst[n:], tags[min(n, len(tags)):])
		n += k
		if res != drained {
			if k == 0 {
				return n
			}
			continue
		}
		next := s.next.Load()
		if next == nil || next == q.closed {
			// Sealed, and the producer that sealed it has not linked the
			// next segment yet: its push has not taken effect. Or the
			// queue refuses pushes, and this was its last segment.
			return n
		}
		q.head.CompareAndSwap(s, next)
	}
	return n
}

// popN claims up to len(dst) indexes of s with one CAS on head and copies
// their values to dst, and their tags to the first len(tags) of tags. It
// reports drained when s is sealed and exhausted.
func (s *segment[T]) popN(dst []T, tags []int64) (int, popResult) {
	spins := 0
	for {
		h := s.head.Load()
		// Fast path for one value: the cell at head is published, so a
		// value is there without a look at tail, which producers keep
		// writing.
		n := uint64(1)
		if len(dst) > 1 || s.seq(s.cellOf(h), h) != h+1 {
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
		size := uint64(len(s.cells))
		var zero T
		for i := range dst[:n] {
			idx := h + uint64(i)
			c := s.cellOf(idx)
			if s.seq(c, idx) != idx+1 { // checked here: awaitPublished is not inlined
				s.awaitPublished(c, idx)
			}
			dst[i] = c.v
			if i < len(tags) {
				tags[i] = c.tag
			}
			c.v = zero // let the garbage collector have what it referred to
		}
		if n == 1 || !s.recycleRange(h, h+n) {
			for idx := h; idx < h+n; idx++ {
				// Recycles the cell for the producer of idx+size; the copy
				// above happens before that producer's write.
				s.setSeq(s.cellOf(idx), idx, idx+size)
			}
		}
		return int(n), popped
	}
}

// recycleRange recycles the copied-out indexes [h, e) with one CAS on the
// watermark instead of one atomic store a cell, which is what makes
// a batch pop cheap: in Go every atomic store is a full barrier. It succeeds
// when every index below h is recycled already: the watermark is at h, or
// the cells between it and h were recycled one by one (their seq says so), and
// it reports whether it did. Otherwise, an earlier index is still being
// copied out, and the caller recycles its cells one by one; the watermark may
// lag behind for ever, which costs later batches a scan, never a wait.
func (s *segment[T]) recycleRange(h, e uint64) bool {
	size := uint64(len(s.cells))
	f := s.recycled.Load()
	g := f
	for g < h && s.seq(s.cellOf(g), g) == g+size {
		g++
	}
	if g < h {
		if g > f {
			s.recycled.CompareAndSwap(f, g) // keep the next scan short
		}
		return false
	}
	return s.recycled.CompareAndSwap(f, e)
}

// awaitPublished waits until c, the cell of index i, is published: the
// producer that claimed it has stored its value. That producer is between
// two adjacent statements of segment.push, so the wait is short unless it
// was preempted; then yielding lets it run.
func (s *segment[T]) awaitPublished(c *cell[T], i uint64) {
	for n := 0; s.seq(c, i) != i+1; n++ {
		if n >= 16 {
			runtime.Gosched()
		}
	}
}

// Refuse makes every later push return Refused. Every push that returns
// Pushed, before or during Refuse, has claimed its index by the time
// Refuse returns, so that a pop after it finds the value (a claimed index
// counts as queued). It is called once.
//
// A push succeeds by a CAS on an unsealed segment's tail, or by linking a
// segment after a sealed one. Refuse seals the last segment, then links
// q.closed after it: a push that links first makes that CAS fail, and
// Refuse seals the segment it linked, whose value is already in it.
//
// q.closed is sealed and empty, never written, and never becomes head or
// tail: a push that finds it returns Refused and links nothing after it,
// and a pop that reaches it has reached the end. Each Queue has its own
// (Init makes it): a package-level variable cannot have a type parameter,
// and a queue's segments only ever link to its own, so comparing with
// q.closed is as sure as comparing with one shared sentinel was.
func (q *Queue[T]) Refuse() {
	s := q.tail.Load()
	for {
		for n := s.next.Load(); n != nil; n = s.next.Load() {
			if n == q.closed {
				return
			}
			s = n
		}
		s.tail.Or(sealed)
		if s.next.CompareAndSwap(nil, q.closed) {
			return
		}
	}
}

// Empty reports whether no value is queued or being published. A claimed
// but unpublished cell counts as queued: see the comment at the top.
func (q *Queue[T]) Empty() bool {
	for s := q.head.Load(); s != nil; s = s.next.Load() {
		if s.head.Load() < s.tail.Load()&^sealed {
			return false
		}
	}
	return true
}

// Len returns the number of values queued (the port's Stats.Queued).
// Under concurrent use it is a snapshot of each segment in turn, not of
// the whole queue.
func (q *Queue[T]) Len() int {
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
// the other side of the queue (the iocp package's BenchmarkManyGated
// measures it; see bench/README.md). On many cores the spins come first so that short
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
