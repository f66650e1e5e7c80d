package iocp

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/semaphore"
)

// The pool's benchmarks run the pool beside the pools Go programs write
// today, with the same concurrency value C = GOMAXPROCS:
//
//   - impl=chan: C goroutines that receive tasks from a buffered channel;
//   - impl=semaphore: a goroutine per task, C at a time, bounded by
//     golang.org/x/sync/semaphore.
//
//	go test -run '^$' -bench 'Pool' -count 6 > pool.txt
//	go run golang.org/x/perf/cmd/benchstat@latest -col /impl pool.txt

// BenchmarkPoolBlocking: each task does some CPU work and then waits 1 ms
// (a database call, say). The pool's handler marks the wait with
// Blocking, so another worker runs meanwhile; the other pools cannot, and
// hold their slot through the wait. Reported: tasks/s, and cpu-max, the
// most tasks seen in their CPU part at once, which must not exceed C.
// impl=pool is the default pool, which starts workers while all of its
// are blocked; impl=pool16 has 16 workers, sized by hand, and
// impl=fixed the default's 2C workers and no more (WithMaxWorkers).
func BenchmarkPoolBlocking(b *testing.B) {
	c := runtime.GOMAXPROCS(0)
	for _, bc := range []struct {
		name string
		run  func(*testing.B, *blockingTask)
	}{
		{"pool", func(b *testing.B, t *blockingTask) { runPool(b, c, 0, t) }},
		{"pool16", func(b *testing.B, t *blockingTask) { runPool(b, c, 16, t, WithMaxWorkers(16)) }},
		{"fixed", func(b *testing.B, t *blockingTask) { runPool(b, c, 2*c, t, WithMaxWorkers(2*c)) }},
		{"semaphore", func(b *testing.B, t *blockingTask) { runSemaphore(b, c, t) }},
		{"chan", func(b *testing.B, t *blockingTask) { runChanPool(b, c, t) }},
	} {
		b.Run("impl="+bc.name, func(b *testing.B) {
			b.ReportAllocs()
			t := &blockingTask{work: 20000, wait: time.Millisecond}
			bc.run(b, t)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
			b.ReportMetric(float64(t.most.Load()), "cpu-max")
			if int(t.most.Load()) > c {
				b.Errorf("%d tasks in their CPU part at once, concurrency %d", t.most.Load(), c)
			}
		})
	}
}

// BenchmarkPoolDispatch: tasks that do nothing, to measure what the
// pool's dispatch costs per packet against a channel pool's receive.
func BenchmarkPoolDispatch(b *testing.B) {
	c := runtime.GOMAXPROCS(0)
	b.Run("impl=pool", func(b *testing.B) {
		b.ReportAllocs()
		runPool(b, c, 0, &blockingTask{})
	})
	b.Run("impl=chan", func(b *testing.B) {
		b.ReportAllocs()
		runChanPool(b, c, &blockingTask{})
	})
}

// A blockingTask is one unit of benchmark work: work rounds of arithmetic,
// then a wait of wait.
type blockingTask struct {
	work int
	wait time.Duration

	inCPU, most atomic.Int32 // tasks in their CPU part now, and at most
	sink        atomic.Uint64
}

// cpu does the task's CPU part.
func (t *blockingTask) cpu() {
	if t.work == 0 {
		return
	}
	n := t.inCPU.Add(1)
	raise(&t.most, n)
	x := uint64(n)
	for range t.work { // xorshift: no memory traffic, no calls
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	t.sink.Add(x)
	t.inCPU.Add(-1)
}

// runPool runs b.N tasks on a Pool of n workers on a port of concurrency
// c; the handler marks the wait. The producer posts them all as fast as it
// can, as a program would: the port's queue has no bound.
func runPool(b *testing.B, c, n int, t *blockingTask, opts ...PoolOption) {
	p, err := NewPort(c)
	if err != nil {
		b.Fatal(err)
	}
	var done sync.WaitGroup
	done.Add(b.N)
	pl, err := p.NewPool(n, func(ctx context.Context, _ Packet) {
		t.cpu()
		if t.wait > 0 {
			Blocking(ctx, func() { time.Sleep(t.wait) })
		}
		done.Done()
	}, opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer pl.Close()
	b.ResetTimer()
	for range b.N {
		p.Post(Packet{})
	}
	done.Wait()
	b.StopTimer()
}

// runSemaphore runs b.N tasks, each on its own goroutine, c at a time.
func runSemaphore(b *testing.B, c int, t *blockingTask) {
	sem := semaphore.NewWeighted(int64(c))
	ctx := context.Background()
	var done sync.WaitGroup
	b.ResetTimer()
	for range b.N {
		sem.Acquire(ctx, 1)
		done.Go(func() {
			t.cpu()
			time.Sleep(t.wait)
			sem.Release(1)
		})
	}
	done.Wait()
	b.StopTimer()
}

// runChanPool runs b.N tasks on c goroutines fed by a buffered channel,
// whose sends wait while it is full.
func runChanPool(b *testing.B, c int, t *blockingTask) {
	ch := make(chan struct{}, chanCap)
	var done, exited sync.WaitGroup
	done.Add(b.N)
	for range c {
		exited.Go(func() {
			for range ch {
				t.cpu()
				if t.wait > 0 {
					time.Sleep(t.wait)
				}
				done.Done()
			}
		})
	}
	defer exited.Wait()
	defer close(ch)
	b.ResetTimer()
	for range b.N {
		ch <- struct{}{}
	}
	done.Wait()
	b.StopTimer()
}

// BenchmarkPace measures how fast Blocking's pacing (pace.go) reacts, on a
// pool of C = GOMAXPROCS workers and concurrency C.
//
// waits: every worker is in a Blocking region that waits on a channel,
// and one more Call is made: ns/op is the time from the Call to its
// function's start (the pool frees a slot and starts a worker for it).
//
// computes: bursts of 16 Calls whose Blocking region spins 20 ms of CPU,
// a region marked blocking that in fact computes (long enough for the
// scheduler to preempt it, so that regions beyond GOMAXPROCS interleave).
// Reported: the most regions seen computing at once (peak) and the mean
// over the burst, sampled at each region's start, with pacing
// (impl=paced, Blocking) and with Block and Unblock, which free the slot
// whatever the CPU does (impl=exact); a semaphore of C would show C.
func BenchmarkPace(b *testing.B) {
	c := runtime.GOMAXPROCS(0)
	b.Run("case=waits", func(b *testing.B) {
		p, _ := NewPort(c)
		pl, _ := p.NewPool(c, nil, WithMaxWorkers(c+1))
		defer pl.Close()
		gate := make(chan struct{})
		var held sync.WaitGroup
		inside := make(chan struct{}, c)
		for range c {
			held.Go(func() {
				Call(context.Background(), pl, func(ctx context.Context) (int, error) {
					Blocking(ctx, func() { inside <- struct{}{}; <-gate })
					return 0, nil
				})
			})
		}
		for range c {
			<-inside
		}
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			Call(context.Background(), pl, func(ctx context.Context) (int, error) { return 0, nil })
		}
		b.StopTimer()
		close(gate)
		held.Wait()
	})
	spin := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); {
		}
	}
	for _, impl := range []string{"paced", "exact"} {
		b.Run("case=computes/impl="+impl, func(b *testing.B) {
			p, _ := NewPort(c)
			pl, _ := p.NewPool(c, nil, WithMaxWorkers(256))
			defer pl.Close()
			var now, peak atomic.Int64
			var sum, n atomic.Int64
			region := func(ctx context.Context) (int, error) {
				mark := func() {
					k := now.Add(1)
					sum.Add(k)
					n.Add(1)
					for m := peak.Load(); k > m && !peak.CompareAndSwap(m, k); m = peak.Load() {
					}
					spin(20 * time.Millisecond)
					now.Add(-1)
				}
				if impl == "paced" {
					Blocking(ctx, mark)
				} else {
					w := FromContext(ctx)
					w.Block()
					mark()
					w.Unblock()
				}
				return 0, nil
			}
			b.ResetTimer()
			for range b.N {
				var g sync.WaitGroup
				for range 16 {
					g.Go(func() { Call(context.Background(), pl, region) })
				}
				g.Wait()
			}
			b.ReportMetric(float64(peak.Load()), "peak")
			b.ReportMetric(float64(sum.Load())/float64(n.Load()), "mean")
		})
	}
}
