package iocp

import (
	"runtime"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// FuzzQueue runs a sequence of operations on a queue with tiny segments and
// on a plain slice, and requires the two to agree after every operation.
// Each input byte is one operation: the low two bits choose push, pop,
// popN or pushN, the rest is popN's or pushN's length; 0xff is refuse,
// after which every push is aborted. The queue's shape (first segment size, largest segment,
// bound) comes from the first arguments.
func FuzzQueue(f *testing.F) {
	f.Add(uint8(0), uint8(0), uint8(0), []byte{0, 0, 0, 1, 1, 1, 1})
	f.Add(uint8(1), uint8(2), uint8(0), []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2 | 4<<2, 1, 0, 0, 0, 0, 0, 2 | 30<<2})
	f.Add(uint8(2), uint8(1), uint8(3), []byte{0, 0, 0, 0, 1, 0, 0, 2 | 2<<2, 0, 0, 0, 0, 1, 1, 1, 1})
	f.Add(uint8(0), uint8(3), uint8(0), make([]byte, 200))
	f.Add(uint8(0), uint8(0), uint8(0), []byte{0, 0, 0, 0xff, 0, 1, 2 | 4<<2, 0})
	f.Add(uint8(0), uint8(0), uint8(2), []byte{0, 0, 0xff, 0, 1, 1, 0})
	f.Fuzz(func(t *testing.T, firstLog, maxLog, limit uint8, ops []byte) {
		first := 2 << (firstLog % 3) // 2 .. 8 slots
		max := first << (maxLog % 4) // up to 8 times that
		bound := int(limit % 8)      // 0: unbounded
		var q queue
		q.initSizes(bound, first, max)
		var model []int
		next := 0
		refused := false
		buf := make([]Packet, 64)
		for i, op := range ops {
			if op == 0xff {
				if !refused {
					q.refuse()
					refused = true
				}
				continue
			}
			switch op & 3 {
			case 3: // pushN
				batch := make([]Packet, int(op>>2)%8+1)
				for j := range batch {
					batch[j].Bytes = next + j
				}
				k, res := q.pushN(batch, 0)
				switch {
				case refused:
					require.Equal(t, aborted, res, "op %d: pushN after refuse", i)
					require.Zero(t, k, "op %d", i)
				case bound != 0:
					want := min(len(batch), bound-len(model))
					require.Equal(t, want, k, "op %d: pushN up to the bound", i)
					if k < len(batch) {
						require.Equal(t, full, res, "op %d", i)
					}
				default:
					require.Equal(t, len(batch), k, "op %d: pushN", i)
					require.Equal(t, pushed, res, "op %d", i)
				}
				for j := range k {
					model = append(model, next+j)
				}
				next += len(batch)
				continue
			case 0:
				res := q.push(&Packet{Bytes: next}, 0)
				if refused {
					require.Equal(t, aborted, res, "op %d: push after refuse", i)
					continue
				}
				ok := res == pushed
				if bound != 0 && len(model) >= bound {
					require.False(t, ok, "op %d: push past the bound", i)
					continue
				}
				require.True(t, ok, "op %d: push refused below the bound", i)
				model = append(model, next)
				next++
			case 1:
				var p [1]Packet
				got := q.popN(p[:])
				if len(model) == 0 {
					require.Zero(t, got, "op %d: pop from an empty queue", i)
					continue
				}
				require.Equal(t, 1, got, "op %d", i)
				require.Equal(t, model[0], p[0].Bytes, "op %d", i)
				model = model[1:]
			case 2:
				n := int(op>>2) + 1
				got := q.popN(buf[:n])
				want := min(n, len(model))
				require.Equal(t, want, got, "op %d: popN(%d)", i, n)
				for j := range got {
					require.Equal(t, model[j], buf[j].Bytes, "op %d: item %d", i, j)
				}
				model = model[got:]
			}
			require.Equal(t, len(model), q.len(), "op %d: len", i)
			require.Equal(t, len(model) == 0, q.empty(), "op %d: empty", i)
		}
	})
}

// TestQueueConcurrent runs producers and consumers on a queue with small
// segments, so that slots wrap and segments are sealed and linked many
// times, and requires every packet to arrive exactly once and each
// producer's packets to arrive in order at each consumer.
func TestQueueConcurrent(t *testing.T) {
	const producers, consumers = 4, 4
	perProducer := 200_000
	if testing.Short() {
		perProducer = 20_000
	}
	for _, shape := range []struct{ first, max int }{{2, 2}, {4, 64}, {minSegment, maxSegment}} {
		var q queue
		q.initSizes(0, shape.first, shape.max)
		var wg sync.WaitGroup
		for p := range producers {
			wg.Go(func() {
				for i := range perProducer {
					assert.Equal(t, pushed, q.push(&Packet{Key: p, Bytes: i}, 0))
				}
			})
		}
		seen := make([][]int, consumers) // per consumer: packets, encoded
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
				buf := make([]Packet, 1+c*5) // consumers 1..3 take batches
				for {
					n := q.popN(buf)
					for _, pkt := range buf[:n] {
						p := pkt.Key.(int)
						if pkt.Bytes <= last[p] {
							t.Errorf("consumer %d: producer %d's packet %d after %d", c, p, pkt.Bytes, last[p])
						}
						last[p] = pkt.Bytes
						seen[c] = append(seen[c], p*perProducer+pkt.Bytes)
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
		// Every consumer stops once all packets are taken; one that is
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
				t.Fatalf("segments %v: packet %d delivered %d times", shape, v, n)
			}
		}
		assert.True(t, q.empty())
	}
}

// TestQueueRefuse pushes from several producers while refuse runs, on
// queues whose segments fill and are linked all the time, and on a
// bounded one: afterwards every push returns aborted, and exactly the
// packets whose push returned pushed are popped, each once.
func TestQueueRefuse(t *testing.T) {
	rounds := 200
	if testing.Short() {
		rounds = 40
	}
	for _, shape := range []struct{ limit, first, max int }{{0, 2, 2}, {0, 2, 8}, {0, minSegment, maxSegment}, {64, 2, 2}} {
		for round := range rounds {
			var q queue
			q.initSizes(shape.limit, shape.first, shape.max)
			var wg sync.WaitGroup
			var mu sync.Mutex
			accepted := map[int]bool{} // pushes that returned pushed
			popped := map[int]int{}    // how many times each packet came out
			start := make(chan struct{})
			for p := range 4 {
				wg.Go(func() {
					<-start
					for i := 0; ; i++ {
						switch q.push(&Packet{Bytes: p<<20 | i}, 0) {
						case pushed:
							mu.Lock()
							accepted[p<<20|i] = true
							mu.Unlock()
						case aborted:
							return
						}
						if shape.limit != 0 && i%16 == 0 {
							var buf [8]Packet
							n := q.popN(buf[:]) // make room, and count what came out
							mu.Lock()
							for _, pkt := range buf[:n] {
								popped[pkt.Bytes]++
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
			q.refuse()
			assert.Equal(t, aborted, q.push(&Packet{}, 0), "a push after refuse")
			wg.Wait()
			var buf [16]Packet
			for n := q.popN(buf[:]); n > 0; n = q.popN(buf[:]) {
				for _, pkt := range buf[:n] {
					popped[pkt.Bytes]++
				}
			}
			for k, n := range popped {
				require.True(t, accepted[k], "shape %v: packet %x popped, never accepted", shape, k)
				require.Equal(t, 1, n, "shape %v: packet %x popped %d times", shape, k, n)
			}
			require.Equal(t, len(accepted), len(popped), "shape %v: accepted packets lost after refuse", shape)
			assert.True(t, q.empty())
			assert.Zero(t, q.len())
		}
	}
}
