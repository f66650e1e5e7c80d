package pools_test

import (
	"context"
	"errors"
	"runtime"
	"testing"

	"github.com/alitto/pond/v2"
	"github.com/iocp-go/iocp"
	"github.com/sourcegraph/conc/pool"
	"golang.org/x/sync/errgroup"
)

// The per-request shapes: what a service's handler pays to run its work on
// a shared pool and get the result back (BenchmarkCall), and to fan out
// to ten functions and wait for them (BenchmarkGroup). Handlers are
// b.RunParallel's goroutines; the work is a few nanoseconds, so what is
// measured is the dispatch. Every pool is bounded to GOMAXPROCS.
//
//	go test -run '^$' -bench 'Call|Group' -count 6 > ../calls.txt
//	go run golang.org/x/perf/cmd/benchstat@latest -col /impl ../calls.txt

var errOdd = errors.New("odd")

func work(i int) (int, error) {
	if i < 0 {
		return 0, errOdd
	}
	return i * 2, nil
}

// BenchmarkCall: one function a request, its result back.
// impl=iocp: iocp.Call on a shared pool; impl=goroutine: a goroutine and
// a channel a call, as a handler would write it without a pool, bounded
// by nothing; impl=pond: a shared pond pool's SubmitErr and Wait (its
// result through a captured variable).
func BenchmarkCall(b *testing.B) {
	c := runtime.GOMAXPROCS(0)
	b.Run("impl=iocp", func(b *testing.B) {
		port, _ := iocp.NewPort(c)
		pl, _ := port.NewPool(0, nil)
		defer pl.Close()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for i := 0; pb.Next(); i++ {
				if _, err := iocp.Call(ctx, pl, func(context.Context) (int, error) { return work(i) }); err != nil {
					b.Error(err)
				}
			}
		})
	})
	b.Run("impl=goroutine", func(b *testing.B) {
		type result struct {
			v   int
			err error
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				ch := make(chan result, 1)
				go func() { v, err := work(i); ch <- result{v, err} }()
				if r := <-ch; r.err != nil {
					b.Error(r.err)
				}
			}
		})
	})
	b.Run("impl=pond", func(b *testing.B) {
		p := pond.NewPool(c)
		defer p.StopAndWait()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				var v int
				if err := p.SubmitErr(func() (err error) { v, err = work(i); return err }).Wait(); err != nil {
					b.Error(err)
				}
				_ = v
			}
		})
	})
}

// BenchmarkGroup: a request fans out to 10 functions, at most 4 in flight,
// and waits for them, with the first error back and a context cancelled
// by it. impl=iocp: pool.Group on a shared pool; impl=errgroup:
// errgroup.WithContext and SetLimit, a goroutine a function;
// impl=conc: conc's pool.New().WithContext(ctx).WithMaxGoroutines(4);
// impl=pond: a shared pond pool's NewGroup.
func BenchmarkGroup(b *testing.B) {
	const fanout, limit = 10, 4
	c := runtime.GOMAXPROCS(0)
	b.Run("impl=iocp", func(b *testing.B) {
		port, _ := iocp.NewPort(c)
		pl, _ := port.NewPool(0, nil)
		defer pl.Close()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var out [fanout]int
			for pb.Next() {
				g, _ := pl.Group(context.Background())
				g.SetLimit(limit)
				for i := range fanout {
					g.Go(func(context.Context) (err error) { out[i], err = work(i); return err })
				}
				if err := g.Wait(); err != nil {
					b.Error(err)
				}
			}
		})
	})
	b.Run("impl=errgroup", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var out [fanout]int
			for pb.Next() {
				g, _ := errgroup.WithContext(context.Background())
				g.SetLimit(limit)
				for i := range fanout {
					g.Go(func() (err error) { out[i], err = work(i); return err })
				}
				if err := g.Wait(); err != nil {
					b.Error(err)
				}
			}
		})
	})
	b.Run("impl=conc", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var out [fanout]int
			for pb.Next() {
				p := pool.New().WithContext(context.Background()).WithCancelOnError().WithFirstError().WithMaxGoroutines(limit)
				for i := range fanout {
					p.Go(func(context.Context) (err error) { out[i], err = work(i); return err })
				}
				if err := p.Wait(); err != nil {
					b.Error(err)
				}
			}
		})
	})
	b.Run("impl=pond", func(b *testing.B) {
		p := pond.NewPool(c)
		defer p.StopAndWait()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var out [fanout]int
			for pb.Next() {
				g := p.NewGroupContext(context.Background())
				for i := range fanout {
					g.SubmitErr(func() (err error) { out[i], err = work(i); return err })
				}
				if err := g.Wait(); err != nil {
					b.Error(err)
				}
			}
		})
	})
}
