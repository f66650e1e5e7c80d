package iocp

import (
	"context"
	"runtime"
	"sync"
	"testing"
)

// Every benchmark runs the port beside a baseline, a buffered channel of
// Packet doing the same work, as sub-benchmarks "port" and "chan" of one
// benchmark, so that one run gives both and benchstat compares them:
//
//	go test -run '^$' -bench . -count 10 > bench.txt
//	go run golang.org/x/perf/cmd/benchstat@latest -col /impl bench.txt
//
// ns/op is per packet everywhere but in BlockUnblock, where it is per pair.

// Flow control for the throughput benchmarks. Producers that never wait
// would run ahead and grow the port's queue without bound, while a
// channel's full buffer stops its senders: the two would not do the same
// work. So both get the same window: a producer takes a credit before each
// block of creditBlock packets, and a consumer returns one after each
// creditBlock packets it took. With credits credits, no more than
// credits*creditBlock packets are ever queued, the channel's capacity,
// so its senders never block on it. The credits cost both sides one
// channel operation per creditBlock packets.
const (
	creditBlock = 256
	credits     = 8 // >= consumers + 1: see newWindow
	chanCap     = credits * creditBlock
)

// A window hands out the credits. With more credits than consumers it
// cannot deadlock: while producers wait, every credit taken and not
// returned stands for a full block of packets that are queued or held
// in a consumer's count below creditBlock, and consumers hold fewer than
// creditBlock packets each.
type window chan struct{}

func newWindow() window {
	w := make(window, credits)
	for range credits {
		w <- struct{}{}
	}
	return w
}

// produce sends n packets through send, taking credits as it goes.
func (w window) produce(n int, send func(i int)) {
	for i := range n {
		if i%creditBlock == 0 {
			<-w
		}
		send(i)
	}
}

// consume takes n packets through recv, returning credits as it goes.
func (w window) consume(n int, recv func() bool) {
	for i := 1; i <= n; i++ {
		if !recv() {
			return
		}
		if i%creditBlock == 0 {
			w <- struct{}{}
		}
	}
}

// BenchmarkPostGet: one producer goroutine, one consumer.
func BenchmarkPostGet(b *testing.B) {
	b.Run("impl=port", func(b *testing.B) {
		b.ReportAllocs()
		p := benchPort(b, 1)
		defer reportWakeups(b, p)()
		w := p.NewWorker()
		win := newWindow()
		go win.produce(b.N, func(i int) { p.Post(Packet{Bytes: i}) })
		ctx := context.Background()
		win.consume(b.N, func() bool {
			_, err := w.Get(ctx)
			return err == nil
		})
	})
	b.Run("impl=chan", func(b *testing.B) {
		b.ReportAllocs()
		ch := make(chan Packet, chanCap)
		win := newWindow()
		go win.produce(b.N, func(i int) { ch <- Packet{Bytes: i} })
		win.consume(b.N, func() bool {
			<-ch
			return true
		})
	})
}

// BenchmarkPostGetOneGoroutine: Post and Get in turn in one goroutine,
// with nothing shared with another core: the cost of the instructions
// alone, against a channel send and receive.
func BenchmarkPostGetOneGoroutine(b *testing.B) {
	b.Run("impl=port", func(b *testing.B) {
		b.ReportAllocs()
		p := benchPort(b, 1)
		w := p.NewWorker()
		ctx := context.Background()
		for i := range b.N {
			p.Post(Packet{Bytes: i})
			if _, err := w.Get(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=chan", func(b *testing.B) {
		b.ReportAllocs()
		ch := make(chan Packet, chanCap)
		for i := range b.N {
			ch <- Packet{Bytes: i}
			<-ch
		}
	})
}

// BenchmarkManyGated: 2*GOMAXPROCS producers and as many consumers; the
// port's concurrency value is GOMAXPROCS, so half its workers wait at any
// time. The channel has no gate: all its consumers compete.
func BenchmarkManyGated(b *testing.B) {
	n := 2 * runtime.GOMAXPROCS(0)
	if credits <= n {
		b.Skipf("%d credits are too few for %d consumers", credits, n)
	}
	split := func(b *testing.B, i int) int { return b.N/n + btoi(i < b.N%n) }
	b.Run("impl=port", func(b *testing.B) {
		b.ReportAllocs()
		p := benchPort(b, 0)
		defer reportWakeups(b, p)()
		win := newWindow()
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { win.produce(split(b, i), func(int) { p.Post(Packet{}) }) })
			wg.Go(func() {
				w := p.NewWorker()
				defer w.Close()
				ctx := context.Background()
				win.consume(split(b, i), func() bool {
					_, err := w.Get(ctx)
					return err == nil
				})
			})
		}
		wg.Wait()
	})
	b.Run("impl=chan", func(b *testing.B) {
		b.ReportAllocs()
		ch := make(chan Packet, chanCap)
		win := newWindow()
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { win.produce(split(b, i), func(int) { ch <- Packet{} }) })
			wg.Go(func() {
				win.consume(split(b, i), func() bool {
					<-ch
					return true
				})
			})
		}
		wg.Wait()
	})
}

// BenchmarkPingPong: every packet wakes a parked worker, which answers on
// a channel before it waits again; the poster waits for the answer.
func BenchmarkPingPong(b *testing.B) {
	b.Run("impl=port", func(b *testing.B) {
		b.ReportAllocs()
		p := benchPort(b, 1)
		ack := make(chan struct{})
		go func() {
			w := p.NewWorker()
			defer w.Close()
			for {
				if _, err := w.Get(context.Background()); err != nil {
					return
				}
				ack <- struct{}{}
			}
		}()
		before := p.Stats().Wakeups
		for range b.N {
			p.Post(Packet{})
			<-ack
		}
		b.ReportMetric(float64(p.Stats().Wakeups-before)/float64(b.N), "wakeups/op")
	})
	b.Run("impl=chan", func(b *testing.B) {
		b.ReportAllocs()
		ch := make(chan Packet, 1)
		ack := make(chan struct{})
		done := make(chan struct{})
		defer close(done)
		go func() {
			for {
				select {
				case <-ch:
				case <-done:
					return
				}
				ack <- struct{}{}
			}
		}()
		for range b.N {
			ch <- Packet{}
			<-ack
		}
	})
}

// drainChunk is how many packets the draining benchmarks queue, untimed,
// before they time taking them out.
const drainChunk = 1 << 14

// BenchmarkGetBatch64: draining a queue 64 packets a call. Filling it is
// not timed. The channel takes its 64 with 64 receives.
func BenchmarkGetBatch64(b *testing.B) {
	b.Run("impl=port", func(b *testing.B) {
		b.ReportAllocs()
		p := benchPort(b, 1)
		w := p.NewWorker()
		dst := make([]Packet, 64)
		ctx := context.Background()
		for done := 0; done < b.N; {
			b.StopTimer()
			chunk := min(drainChunk, b.N-done)
			for i := range chunk {
				p.Post(Packet{Bytes: i})
			}
			b.StartTimer()
			for left := chunk; left > 0; {
				n, err := w.GetBatch(ctx, dst[:min(64, left)])
				if err != nil {
					b.Fatal(err)
				}
				left -= n
			}
			done += chunk
		}
	})
	b.Run("impl=chan", func(b *testing.B) {
		b.ReportAllocs()
		ch := make(chan Packet, drainChunk)
		dst := make([]Packet, 64)
		for done := 0; done < b.N; {
			b.StopTimer()
			chunk := min(drainChunk, b.N-done)
			for i := range chunk {
				ch <- Packet{Bytes: i}
			}
			b.StartTimer()
			for left := chunk; left > 0; {
				k := min(64, left)
				for i := range k {
					dst[i] = <-ch
				}
				left -= k
			}
			done += chunk
		}
	})
}

// BenchmarkBacklogC1: concurrency 1, three workers parked, one running
// worker posting chunks of packets and draining each. The parked workers
// must never be woken: wakeups/op is 0. The channel does the same queueing
// and draining with no one else waiting.
func BenchmarkBacklogC1(b *testing.B) {
	b.Run("impl=port", func(b *testing.B) {
		b.ReportAllocs()
		p := benchPort(b, 1)
		var wg sync.WaitGroup
		defer wg.Wait()
		defer p.Close()
		require := func(err error) {
			if err != nil {
				b.Fatal(err)
			}
		}
		require(p.Post(Packet{}))
		w := p.NewWorker()
		_, err := w.Get(context.Background()) // w runs: R = C = 1
		require(err)
		for range 3 {
			wg.Go(func() { p.NewWorker().Get(context.Background()) })
		}
		for p.Stats().Waiting < 3 {
			runtime.Gosched()
		}
		ctx := context.Background()
		before := p.Stats().Wakeups
		b.ResetTimer()
		for done := 0; done < b.N; {
			chunk := min(drainChunk, b.N-done)
			for i := range chunk {
				p.Post(Packet{Bytes: i})
			}
			for range chunk {
				_, err := w.Get(ctx)
				require(err)
			}
			done += chunk
		}
		b.StopTimer()
		b.ReportMetric(float64(p.Stats().Wakeups-before)/float64(b.N), "wakeups/op")
	})
	b.Run("impl=chan", func(b *testing.B) {
		b.ReportAllocs()
		ch := make(chan Packet, drainChunk)
		for done := 0; done < b.N; {
			chunk := min(drainChunk, b.N-done)
			for i := range chunk {
				ch <- Packet{Bytes: i}
			}
			for range chunk {
				<-ch
			}
			done += chunk
		}
	})
}

// BenchmarkBlockUnblock: the cost of marking a running worker blocked and
// running again, against giving back and taking again a token of a
// channel semaphore.
func BenchmarkBlockUnblock(b *testing.B) {
	b.Run("impl=port", func(b *testing.B) {
		b.ReportAllocs()
		p := benchPort(b, 1)
		p.Post(Packet{})
		w := p.NewWorker()
		if _, ok := w.TryGet(); !ok {
			b.Fatal("no packet")
		}
		for range b.N {
			w.Block()
			w.Unblock()
		}
	})
	b.Run("impl=chan", func(b *testing.B) {
		b.ReportAllocs()
		sem := make(chan struct{}, 1)
		sem <- struct{}{}
		for range b.N {
			<-sem
			sem <- struct{}{}
		}
	})
}

// The shapes below are written as a user would write each side, with no
// help that only one side needs: producers post as fast as they can, and
// the channel has the buffer a program would give it.
const userChanCap = 1024

// BenchmarkSPSC: one producer posts b.N packets as fast as it can, one
// worker takes them. "port" is an unbounded port, whose queue grows while
// the producer runs ahead; "port-bounded" bounds it to the channel's
// capacity and posts with PostWait, which waits for room as a channel send
// does.
func BenchmarkSPSC(b *testing.B) {
	spsc := func(b *testing.B, p *Port, post func(Packet)) {
		b.ReportAllocs()
		defer reportWakeups(b, p)()
		go func() {
			for i := range b.N {
				post(Packet{Bytes: i})
			}
		}()
		w := p.NewWorker()
		defer w.Close()
		ctx := context.Background()
		for range b.N {
			if _, err := w.Get(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	portAndBounded(b, 1, spsc)
	b.Run("impl=chan", chanSPSC)
}

// BenchmarkMPMC: 2*GOMAXPROCS producers and as many workers, on a port of
// the default concurrency value (GOMAXPROCS), against as many senders and
// receivers on one channel.
func BenchmarkMPMC(b *testing.B) {
	n := 2 * runtime.GOMAXPROCS(0)
	split := func(b *testing.B, i int) int { return b.N/n + btoi(i < b.N%n) }
	mpmc := func(b *testing.B, p *Port, post func(Packet)) {
		b.ReportAllocs()
		defer reportWakeups(b, p)()
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				for range split(b, i) {
					post(Packet{})
				}
			})
			wg.Go(func() {
				w := p.NewWorker()
				defer w.Close()
				ctx := context.Background()
				for range split(b, i) {
					if _, err := w.Get(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	portAndBounded(b, 0, mpmc)
	b.Run("impl=chan", func(b *testing.B) {
		b.ReportAllocs()
		ch := make(chan Packet, userChanCap)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				for range split(b, i) {
					ch <- Packet{}
				}
			})
			wg.Go(func() {
				for range split(b, i) {
					<-ch
				}
			})
		}
		wg.Wait()
	})
}

// chanSPSC is the channel side of SPSC and BatchLive: a sender that
// never stops, a receiver that takes one packet at a time.
func chanSPSC(b *testing.B) {
	b.ReportAllocs()
	ch := make(chan Packet, userChanCap)
	go func() {
		for i := range b.N {
			ch <- Packet{Bytes: i}
		}
	}()
	for range b.N {
		<-ch
	}
}

// portAndBounded runs shape as "port", on an unbounded port that Post
// feeds, and as "port-bounded", on one bounded to the channel's capacity
// that PostWait feeds.
func portAndBounded(b *testing.B, concurrency int, shape func(b *testing.B, p *Port, post func(Packet))) {
	b.Run("impl=port", func(b *testing.B) {
		p := benchPort(b, concurrency)
		shape(b, p, func(pkt Packet) { p.Post(pkt) })
	})
	b.Run("impl=port-bounded", func(b *testing.B) {
		p := benchPort(b, concurrency, WithQueueLimit(userChanCap))
		ctx := context.Background()
		shape(b, p, func(pkt Packet) { p.PostWait(ctx, pkt) })
	})
}

// BenchmarkPingPong2: both hops are the primitive under test. The caller
// posts to one port and takes the answer from another; a worker takes
// from the first and posts to the second. Against two channels of
// capacity 1.
func BenchmarkPingPong2(b *testing.B) {
	b.Run("impl=port", func(b *testing.B) {
		b.ReportAllocs()
		ping, pong := benchPort(b, 1), benchPort(b, 1)
		go func() {
			w := ping.NewWorker()
			defer w.Close()
			for {
				pkt, err := w.Get(context.Background())
				if err != nil {
					return
				}
				pong.Post(pkt)
			}
		}()
		w := pong.NewWorker()
		defer w.Close()
		ctx := context.Background()
		before := ping.Stats().Wakeups + pong.Stats().Wakeups
		for i := range b.N {
			ping.Post(Packet{Bytes: i})
			if _, err := w.Get(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(ping.Stats().Wakeups+pong.Stats().Wakeups-before)/float64(b.N), "wakeups/op")
	})
	b.Run("impl=chan", func(b *testing.B) {
		b.ReportAllocs()
		ping, pong := make(chan Packet, 1), make(chan Packet, 1)
		defer close(ping)
		go func() {
			for pkt := range ping {
				pong <- pkt
			}
		}()
		for i := range b.N {
			ping <- Packet{Bytes: i}
			<-pong
		}
	})
}

// BenchmarkBatchLive: a producer posts as fast as it can while a worker
// takes what is there with GetBatch(64); the channel's receiver takes one
// at a time, as a channel allows. "port-postbatch" also posts in batches
// of 64 (PostBatch), against a channel sender that sends 64 in a row.
func BenchmarkBatchLive(b *testing.B) {
	const batch = 64
	consume := func(b *testing.B, p *Port) {
		defer reportWakeups(b, p)()
		w := p.NewWorker()
		defer w.Close()
		dst := make([]Packet, batch)
		ctx := context.Background()
		calls := 0
		for left := b.N; left > 0; calls++ {
			n, err := w.GetBatch(ctx, dst[:min(batch, left)])
			if err != nil {
				b.Fatal(err)
			}
			left -= n
		}
		b.ReportMetric(float64(b.N)/float64(calls), "packets/batch")
	}
	b.Run("impl=port", func(b *testing.B) {
		b.ReportAllocs()
		p := benchPort(b, 1)
		go func() {
			for i := range b.N {
				p.Post(Packet{Bytes: i})
			}
		}()
		consume(b, p)
	})
	b.Run("impl=port-postbatch", func(b *testing.B) {
		b.ReportAllocs()
		p := benchPort(b, 1)
		go func() {
			src := make([]Packet, batch)
			for i := 0; i < b.N; i += batch {
				p.PostBatch(src[:min(batch, b.N-i)])
			}
		}()
		consume(b, p)
	})
	b.Run("impl=chan", chanSPSC)
}

// benchPort makes a port for a benchmark: the native backend's with
// -native (on Windows).
func benchPort(b *testing.B, concurrency int, opts ...Option) *Port {
	p, err := NewPort(concurrency, portOptions(opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// reportWakeups reports the port's wakeups per packet between its call
// and the call of the function it returns.
func reportWakeups(b *testing.B, p *Port) func() {
	before := p.Stats().Wakeups
	return func() {
		b.ReportMetric(float64(p.Stats().Wakeups-before)/float64(b.N), "wakeups/op")
	}
}

func btoi(v bool) int {
	if v {
		return 1
	}
	return 0
}
