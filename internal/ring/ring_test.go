package ring

import (
	"runtime"
	"sync"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// item is the tests' element: a producer and its count.
type item struct{ key, n int }

// push pushes v until it is not Yielded, as a port does while it is open.
func push[T any](q *Queue[T], v T, tag int64) Result {
	for {
		if r := q.Push(&v, tag); r != Yielded {
			return r
		}
	}
}

// pushN is PushN until it returns other than Yielded, as a port does while
// it is open.
func pushN[T any](q *Queue[T], vs []T, tag int64) (int, Result) {
	n := 0
	for {
		k, r := q.PushN(vs[n:], tag)
		n += k
		if r != Yielded {
			return n, r
		}
	}
}

// TestCellSize: an element the size of the port's Packet (48 bytes: an
// interface, an int, a pointer and an error) makes a cell of one 64-byte
// line, which the ring can no longer pad to for a type parameter.
func TestCellSize(t *testing.T) {
	type packet struct {
		key   any
		bytes int
		ov    *int
		err   error
	}
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the 64-byte cell is for 64-bit platforms")
	}
	_ = packet{key: nil, bytes: 0, ov: nil, err: nil} // its fields are for their sizes
	require.Equal(t, uintptr(48), unsafe.Sizeof(packet{}))
	assert.Equal(t, uintptr(64), unsafe.Sizeof(cell[packet]{}))
}

// FuzzQueue runs a sequence of operations on a queue with tiny segments and
// on a plain slice, and requires the two to agree after every operation.
// Each input byte is one operation: the low two bits choose push, pop,
// popN or pushN, the rest is popN's or pushN's length; 0xff is Refuse,
// after which every push is refused. The queue's shape (first segment size, largest segment,
// bound) comes from the first arguments. Each push's tag is the number of
// its first value, and pops return it.
func FuzzQueue(f *testing.F) {
	f.Add(uint8(0), uint8(0), uint8(0), []byte{0, 0, 0, 1, 1, 1, 1})
	f.Add(uint8(1), uint8(2), uint8(0), []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2 | 4<<2, 1, 0, 0, 0, 0, 0, 2 | 30<<2})
	f.Add(uint8(2), uint8(1), uint8(3), []byte{0, 0, 0, 0, 1, 0, 0, 2 | 2<<2, 0, 0, 0, 0, 1, 1, 1, 1})
	f.Add(uint8(0), uint8(3), uint8(0), make([]byte, 200))
	f.Add(uint8(0), uint8(0), uint8(0), []byte{0, 0, 0, 0xff, 0, 1, 2 | 4<<2, 0})
	f.Add(uint8(0), uint8(0), uint8(2), []byte{0, 0, 0xff, 0, 1, 1, 0})
	f.Fuzz(func(t *testing.T, firstLog, maxLog, limit uint8, ops []byte) {
		first := 2 << (firstLog % 3) // 2 .. 8 cells
		max := first << (maxLog % 4) // up to 8 times that
		bound := int(limit % 8)      // 0: unbounded
		var q Queue[item]
		q.initSizes(bound, first, max)
		type queued struct{ n, tag int }
		var model []queued
		next := 0
		refused := false
		buf := make([]item, 64)
		tags := make([]int64, 64)
		for i, op := range ops {
			if op == 0xff {
				if !refused {
					q.Refuse()
					refused = true
				}
				continue
			}
			switch op & 3 {
			case 3: // pushN
				batch := make([]item, int(op>>2)%8+1)
				for j := range batch {
					batch[j].n = next + j
				}
				k, res := pushN(&q, batch, int64(next))
				switch {
				case refused:
					require.Equal(t, Refused, res, "op %d: pushN after Refuse", i)
					require.Zero(t, k, "op %d", i)
				case bound != 0:
					want := min(len(batch), bound-len(model))
					require.Equal(t, want, k, "op %d: pushN up to the bound", i)
					if k < len(batch) {
						require.Equal(t, Full, res, "op %d", i)
					}
				default:
					require.Equal(t, len(batch), k, "op %d: pushN", i)
					require.Equal(t, Pushed, res, "op %d", i)
				}
				for j := range k {
					model = append(model, queued{next + j, next})
				}
				next += len(batch)
				continue
			case 0:
				res := push(&q, item{n: next}, int64(next))
				if refused {
					require.Equal(t, Refused, res, "op %d: push after Refuse", i)
					continue
				}
				ok := res == Pushed
				if bound != 0 && len(model) >= bound {
					require.False(t, ok, "op %d: push past the bound", i)
					continue
				}
				require.True(t, ok, "op %d: push refused below the bound", i)
				model = append(model, queued{next, next})
				next++
			case 1:
				var p [1]item
				got := q.PopN(p[:])
				if len(model) == 0 {
					require.Zero(t, got, "op %d: pop from an empty queue", i)
					continue
				}
				require.Equal(t, 1, got, "op %d", i)
				require.Equal(t, model[0].n, p[0].n, "op %d", i)
				model = model[1:]
			case 2:
				n := int(op>>2) + 1
				got := q.PopTags(buf[:n], tags[:n/2]) // tags for the first half
				want := min(n, len(model))
				require.Equal(t, want, got, "op %d: PopTags(%d)", i, n)
				for j := range got {
					require.Equal(t, model[j].n, buf[j].n, "op %d: item %d", i, j)
					if j < n/2 {
						require.Equal(t, int64(model[j].tag), tags[j], "op %d: item %d's tag", i, j)
					}
				}
				model = model[got:]
			}
			require.Equal(t, len(model), q.Len(), "op %d: Len", i)
			require.Equal(t, len(model) == 0, q.Empty(), "op %d: Empty", i)
		}
	})
}

// TestQueueConcurrent runs producers and consumers on a queue with small
// segments, so that cells wrap and segments are sealed and linked many
// times, and requires every value to arrive exactly once and each
// producer's values to arrive in order at each consumer.
func TestQueueConcurrent(t *testing.T) {
	const producers, consumers = 4, 4
	perProducer := 200_000
	if testing.Short() {
		perProducer = 20_000
	}
	for _, shape := range []struct{ first, max int }{{2, 2}, {4, 64}, {minSegment, maxSegment}} {
		var q Queue[item]
		q.initSizes(0, shape.first, shape.max)
		var wg sync.WaitGroup
		for p := range producers {
			wg.Go(func() {
				for i := range perProducer {
					assert.Equal(t, Pushed, push(&q, item{key: p, n: i}, 0))
				}
			})
		}
		seen := make([][]int, consumers) // per consumer: values, encoded
		var remaining sync.WaitGroup
		total := producers * perProducer
		var mu sync.Mutex
		taken := 0
		for c := range consumers {
			remaining.Go(func() {
				last := make([]int, producers)
				for i := range last {
					last[i] = -1
				}
				buf := make([]item, 1+c*5) // consumers 1..3 take batches
				for {
					n := q.PopN(buf)
					for _, v := range buf[:n] {
						p := v.key
						if v.n <= last[p] {
							t.Errorf("consumer %d: producer %d's value %d after %d", c, p, v.n, last[p])
						}
						last[p] = v.n
						seen[c] = append(seen[c], p*perProducer+v.n)
					}
					mu.Lock()
					taken += n
					done := taken == total
					mu.Unlock()
					if done || t.Failed() {
						return
					}
					if n == 0 {
						mu.Lock()
						done = taken == total
						mu.Unlock()
						if done {
							return
						}
					}
				}
			})
		}
		wg.Wait()
		// Every consumer stops once all values are taken; one that is
		// still looping sees the count reach the total.
		remaining.Wait()
		count := make([]int, total)
		for _, s := range seen {
			for _, v := range s {
				count[v]++
			}
		}
		for v, n := range count {
			if n != 1 {
				t.Fatalf("segments %v: value %d delivered %d times", shape, v, n)
			}
		}
		assert.True(t, q.Empty())
	}
}

// TestQueuePushN: producers push batches of every size while consumers
// take them, on queues whose segments fill and link all the time: every
// value arrives once, each producer's in order at each consumer.
func TestQueuePushN(t *testing.T) {
	const producers = 4
	each := 50_000
	if testing.Short() {
		each = 5_000
	}
	for _, shape := range []struct{ first, max int }{{2, 2}, {4, 64}, {minSegment, maxSegment}} {
		var q Queue[item]
		q.initSizes(0, shape.first, shape.max)
		var wg sync.WaitGroup
		for pr := range producers {
			wg.Go(func() {
				for i := 0; i < each; {
					k := min(1+i%13, each-i)
					vs := make([]item, k)
					for j := range vs {
						vs[j] = item{key: pr, n: i + j}
					}
					n, res := pushN(&q, vs, 0)
					assert.Equal(t, Pushed, res)
					assert.Equal(t, k, n)
					i += k
				}
			})
		}
		total := producers * each
		last := [producers]int{-1, -1, -1, -1}
		seen := 0
		buf := make([]item, 7)
		for seen < total {
			n := q.PopN(buf)
			for _, v := range buf[:n] {
				pr := v.key
				require.Equal(t, last[pr]+1, v.n, "shape %v: producer %d out of order", shape, pr)
				last[pr] = v.n
			}
			seen += n
		}
		wg.Wait()
		assert.True(t, q.Empty())
	}
}

// TestQueueRefuse pushes from several producers while Refuse runs, on
// queues whose segments fill and are linked all the time, and on a
// bounded one: afterwards every push returns Refused, and exactly the
// values whose push returned Pushed are popped, each once.
func TestQueueRefuse(t *testing.T) {
	rounds := 200
	if testing.Short() {
		rounds = 40
	}
	for _, shape := range []struct{ limit, first, max int }{{0, 2, 2}, {0, 2, 8}, {0, minSegment, maxSegment}, {64, 2, 2}} {
		for round := range rounds {
			var q Queue[item]
			q.initSizes(shape.limit, shape.first, shape.max)
			var wg sync.WaitGroup
			var mu sync.Mutex
			accepted := map[int]bool{} // pushes that returned Pushed
			popped := map[int]int{}    // how many times each value came out
			start := make(chan struct{})
			for p := range 4 {
				wg.Go(func() {
					<-start
					for i := 0; ; i++ {
						switch push(&q, item{n: p<<20 | i}, 0) {
						case Pushed:
							mu.Lock()
							accepted[p<<20|i] = true
							mu.Unlock()
						case Refused:
							return
						}
						if shape.limit != 0 && i%16 == 0 {
							var buf [8]item
							n := q.PopN(buf[:]) // make room, and count what came out
							mu.Lock()
							for _, v := range buf[:n] {
								popped[v.n]++
							}
							mu.Unlock()
						}
					}
				})
			}
			close(start)
			for range round % 50 {
				runtime.Gosched()
			}
			q.Refuse()
			assert.Equal(t, Refused, push(&q, item{}, 0), "a push after Refuse")
			wg.Wait()
			var buf [16]item
			for n := q.PopN(buf[:]); n > 0; n = q.PopN(buf[:]) {
				for _, v := range buf[:n] {
					popped[v.n]++
				}
			}
			for k, n := range popped {
				require.True(t, accepted[k], "shape %v: value %x popped, never accepted", shape, k)
				require.Equal(t, 1, n, "shape %v: value %x popped %d times", shape, k, n)
			}
			require.Equal(t, len(accepted), len(popped), "shape %v: accepted values lost after Refuse", shape)
			assert.True(t, q.Empty())
			assert.Zero(t, q.Len())
		}
	}
}
