// Package pools_test measures iocp's Pool against the worker pools Go
// programs use, on a workload whose tasks block: each does some CPU work,
// then waits 1 ms (a database call, say). It lives in a module of its own
// so that the library's go.mod carries none of these pools.
//
//	cd bench/pools
//	go test -run '^$' -bench . -count 6 > ../pools-linux-amd64-2cores.txt
//	go run golang.org/x/perf/cmd/benchstat@latest -col /impl ../pools-linux-amd64-2cores.txt
//
// Every pool is bounded to C = GOMAXPROCS, the concurrency the program
// wants for its CPU work. The iocp pool bounds only the CPU part: its
// handler marks the wait with iocp.Blocking, and another of its 2C
// workers runs meanwhile. The others cannot tell a task waits, and hold
// their slot through it. The baseline is a channel of tasks that C
// goroutines receive from, as a program would write it without a library.
package pools_test

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alitto/pond/v2"
	"github.com/iocp-go/iocp"
	"github.com/panjf2000/ants/v2"
	"github.com/sourcegraph/conc/pool"
)

// task is the workload: CPU work, then a wait. It records the most tasks
// seen in their CPU part at once.
type task struct {
	inCPU, most atomic.Int64
	sink        atomic.Uint64
}

func (t *task) cpu() {
	n := t.inCPU.Add(1)
	for {
		m := t.most.Load()
		if n <= m || t.most.CompareAndSwap(m, n) {
			break
		}
	}
	x := uint64(88172645463325252)
	for range 20000 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	t.sink.Add(x)
	t.inCPU.Add(-1)
}

func wait() { time.Sleep(time.Millisecond) }

func BenchmarkBlocking(b *testing.B) {
	c := runtime.GOMAXPROCS(0)
	for _, impl := range []struct {
		name string
		run  func(b *testing.B, c int, t *task)
	}{
		{"chan", runChan},
		{"iocp", runIOCP},
		{"ants", runAnts},
		{"pond", runPond},
		{"conc", runConc},
	} {
		b.Run("impl="+impl.name, func(b *testing.B) {
			b.ReportAllocs()
			t := new(task)
			impl.run(b, c, t)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
			b.ReportMetric(float64(t.most.Load()), "cpu-max")
			if int(t.most.Load()) > c {
				b.Errorf("%d tasks in their CPU part at once, concurrency %d", t.most.Load(), c)
			}
		})
	}
}

func runChan(b *testing.B, c int, t *task) {
	tasks := make(chan struct{}, 1024)
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			for range tasks {
				t.cpu()
				wait()
			}
		})
	}
	for range b.N {
		tasks <- struct{}{}
	}
	close(tasks)
	wg.Wait()
}

func runIOCP(b *testing.B, c int, t *task) {
	port, err := iocp.NewPort(c)
	if err != nil {
		b.Fatal(err)
	}
	var done sync.WaitGroup
	done.Add(b.N)
	pl, err := port.NewPool(0, func(ctx context.Context, _ iocp.Packet) {
		t.cpu()
		iocp.Blocking(ctx, wait) // another worker takes the slot meanwhile
		done.Done()
	})
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		port.Post(iocp.Packet{})
	}
	done.Wait()
	pl.Shutdown(context.Background())
}

func runAnts(b *testing.B, c int, t *task) {
	p, err := ants.NewPool(c)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Release()
	var done sync.WaitGroup
	done.Add(b.N)
	for range b.N {
		p.Submit(func() { // blocks while c tasks run
			t.cpu()
			wait()
			done.Done()
		})
	}
	done.Wait()
}

func runPond(b *testing.B, c int, t *task) {
	p := pond.NewPool(c)
	for range b.N {
		p.Submit(func() {
			t.cpu()
			wait()
		})
	}
	p.StopAndWait()
}

func runConc(b *testing.B, c int, t *task) {
	p := pool.New().WithMaxGoroutines(c)
	for range b.N {
		p.Go(func() { // blocks while c tasks run
			t.cpu()
			wait()
		})
	}
	p.Wait()
}
