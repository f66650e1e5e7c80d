package iocp_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iocp-go/iocp"
)

func ExampleNewPort() {
	port, err := iocp.NewPort(4)
	if err != nil {
		panic(err)
	}
	defer port.Close()
	fmt.Println("concurrency:", port.Concurrency())

	_, err = iocp.NewPort(-1)
	fmt.Println(err)
	// Output:
	// concurrency: 4
	// iocp: concurrency -1 out of range [0, 2147483647]
}

func ExamplePort_Post() {
	port, _ := iocp.NewPort(1)
	defer port.Close()
	for i := range 3 {
		port.Post(iocp.Packet{Key: "job", Bytes: i})
	}
	w := port.NewWorker()
	for range 3 {
		pkt, _ := w.Get(context.Background())
		fmt.Println(pkt.Key, pkt.Bytes)
	}
	// Output:
	// job 0
	// job 1
	// job 2
}

// A pool of workers, twice the concurrency value, serves the port: the
// shape the reference recommends. This is the README's quick start.
func ExamplePort_NewWorker() {
	port, _ := iocp.NewPort(2)
	var total atomic.Int64
	var wg sync.WaitGroup
	for range 2 * port.Concurrency() {
		wg.Go(func() {
			w := port.NewWorker()
			defer w.Close()
			for {
				pkt, err := w.Get(context.Background())
				if err != nil { // iocp.ErrClosed once the port is shut down
					return
				}
				total.Add(int64(pkt.Bytes))
			}
		})
	}
	for i := 1; i <= 100; i++ {
		port.Post(iocp.Packet{Bytes: i})
	}
	port.Shutdown(context.Background()) // drains the queue, then closes
	wg.Wait()
	fmt.Println("total:", total.Load())
	// Output: total: 5050
}

// A pool runs the workers: a handler per packet, twice as many workers as
// the concurrency value to begin with, and a handler that waits on a lock
// says so, so that another worker runs meanwhile (and, while all of them
// wait, the pool may start more).
func ExamplePort_NewPool() {
	port, _ := iocp.NewPort(2)
	var mu sync.Mutex
	var total int
	pool, _ := port.NewPool(0, func(ctx context.Context, pkt iocp.Packet) {
		iocp.Blocking(ctx, mu.Lock) // the slot goes to another worker while this one waits
		total += pkt.Bytes
		mu.Unlock()
	})
	for i := 1; i <= 100; i++ {
		port.Post(iocp.Packet{Bytes: i})
	}
	pool.Shutdown(context.Background()) // drains the queue, closes the port, waits for the workers
	fmt.Println("total:", total)
	// Output: total: 5050
}

// Bind has a function called for each completion of a source: here the
// reads of a pipe, each callback starting the next read until the end.
func ExamplePool_Bind() {
	port, _ := iocp.NewPort(1)
	pool, _ := port.NewPool(0, func(context.Context, iocp.Packet) {})
	r, w, _ := os.Pipe()
	var read iocp.Overlapped
	buf := make([]byte, 64)
	done := make(chan struct{})
	h, _ := pool.Bind(r, func(ctx context.Context, pkt iocp.Packet) {
		if pkt.Err != nil { // io.EOF once the writer is closed
			fmt.Println("end:", pkt.Err)
			close(done)
			return
		}
		fmt.Printf("read %q\n", buf[:pkt.Bytes])
		pkt.Key.(*iocp.Handle).Read(&read, buf) // a bound handle is its packets' key
	})
	h.Read(&read, buf)
	w.Write([]byte("hello, port"))
	w.Close()
	<-done
	pool.Shutdown(context.Background()) // closes the port, and with it the handle and r
	// Output:
	// read "hello, port"
	// end: EOF
}

// Port.Get is a worker for one call: handy for one-off use, but the work
// done with its packet is not counted against the concurrency value.
func ExamplePort_Get() {
	port, _ := iocp.NewPort(1)
	defer port.Close()
	port.Post(iocp.Packet{Key: "once"})
	pkt, err := port.Get(context.Background())
	fmt.Println(pkt.Key, err, "running:", port.Stats().Running)
	// Output: once <nil> running: 0
}

func ExampleWorker_Get() {
	port, _ := iocp.NewPort(1)
	defer port.Close()
	w := port.NewWorker()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, err := w.Get(ctx) // nothing posted: the deadline ends the wait
	fmt.Println(errors.Is(err, context.DeadlineExceeded))

	port.Post(iocp.Packet{Key: "ready"})
	pkt, err := w.Get(context.Background())
	fmt.Println(pkt.Key, err)
	// Output:
	// true
	// ready <nil>
}

// A worker that blocks hands its slot to a waiting worker.
func ExampleWorker_Block() {
	port, _ := iocp.NewPort(1)
	defer port.Close()
	port.Post(iocp.Packet{Key: "first"})
	a := port.NewWorker()
	pkt, _ := a.Get(context.Background())
	fmt.Println("a runs", pkt.Key)

	// b waits: a holds the only slot.
	got := make(chan iocp.Packet)
	go func() {
		b := port.NewWorker()
		pkt, _ := b.Get(context.Background())
		got <- pkt // b stays running: it does not call Get again
	}()
	for port.Stats().Waiting == 0 {
		time.Sleep(time.Millisecond)
	}
	port.Post(iocp.Packet{Key: "second"})
	fmt.Println("queued:", port.Stats().Queued)

	a.Blocking(func() { // a waits on something else: b runs in its place
		fmt.Println("b runs", (<-got).Key)
	})
	fmt.Println("running:", port.Stats().Running) // a and b: past the concurrency value
	// Output:
	// a runs first
	// queued: 1
	// b runs second
	// running: 2
}

func ExamplePort_Close() {
	port, _ := iocp.NewPort(1)
	done := make(chan error)
	go func() {
		_, err := port.NewWorker().Get(context.Background())
		done <- err
	}()
	for port.Stats().Waiting == 0 {
		time.Sleep(time.Millisecond)
	}
	port.Close()
	fmt.Println(<-done)

	fmt.Println(port.Post(iocp.Packet{}))
	// Output:
	// iocp: port closed
	// iocp: port closed
}

// A connection and a listener associated with one port: every operation
// completes there as a packet with the handle's key, and per-operation
// state travels in the Overlapped.
func ExamplePort_Associate() {
	port, _ := iocp.NewPort(1)
	defer port.Close() // closes the handles, and so the listener and connection

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	lh, _ := port.Associate(ln, "listener")
	var accept iocp.Overlapped
	lh.Accept(&accept)

	client, _ := net.Dial("tcp", ln.Addr().String())
	defer client.Close()
	client.Write([]byte("hello"))

	w := port.NewWorker()
	pkt, _ := w.Get(context.Background())
	fmt.Println(pkt.Key, "accepted:", pkt.Err == nil)

	ch, _ := port.Associate(accept.Conn, "conn")
	buf := make([]byte, 16)
	read := iocp.Overlapped{Value: "first read"} // set before the operation starts
	ch.Read(&read, buf)
	pkt, _ = w.Get(context.Background())
	fmt.Printf("%v: %s read %q\n", pkt.Key, pkt.Overlapped.Value, buf[:pkt.Bytes])

	// Cancel ends a pending operation; its packet still comes, once.
	ch.Read(&read, buf)
	ch.Cancel(&read)
	pkt, _ = w.Get(context.Background())
	fmt.Println(pkt.Key, "aborted:", errors.Is(pkt.Err, iocp.ErrAborted))
	// Output:
	// listener accepted: true
	// conn: first read read "hello"
	// conn aborted: true
}

// Shutdown with a deadline: the drain gets until the deadline, and Close
// then discards what is left, counting it.
func ExamplePort_Shutdown() {
	port, _ := iocp.NewPort(1)
	port.Post(iocp.Packet{Key: "never taken"}) // no worker runs
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := port.Shutdown(ctx); err != nil {
		fmt.Println("shutdown:", err)
		port.Close()
	}
	fmt.Println("discarded:", port.Stats().Discarded)
	// Output:
	// shutdown: context deadline exceeded
	// discarded: 1
}

// A handler's panic is recovered and reported with its packet; the pool
// goes on serving.
func ExampleWithErrorHandler() {
	port, _ := iocp.NewPort(1)
	errs := make(chan error, 1)
	pool, _ := port.NewPool(1, func(_ context.Context, pkt iocp.Packet) {
		if pkt.Key == "bad" {
			panic(errors.New("bad input"))
		}
	}, iocp.WithErrorHandler(func(err error) { errs <- err }))
	port.Post(iocp.Packet{Key: "bad"})
	err := <-errs
	var pe *iocp.PanicError
	if errors.As(err, &pe) {
		fmt.Println("panic with packet", pe.Packet.Key, "value:", pe.Value)
	}
	pool.Close()
	// Output:
	// panic with packet bad value: bad input
}

// Code deep in a call chain holds only a context; NewContext puts the
// worker in it, and Blocking marks the wait for that worker.
func ExampleBlocking() {
	port, _ := iocp.NewPort(1)
	defer port.Close()
	port.Post(iocp.Packet{Key: "job"})
	w := port.NewWorker()
	defer w.Close()
	w.Get(context.Background())
	ctx := iocp.NewContext(context.Background(), w)

	var mu sync.Mutex
	lookup := func(ctx context.Context) { // knows nothing of ports
		iocp.Blocking(ctx, func() {
			mu.Lock() // may wait: the worker's slot is free meanwhile
			fmt.Println("blocked while waiting:", port.Stats().Blocked)
			mu.Unlock()
		})
	}
	lookup(ctx)
	fmt.Println("running again:", port.Stats().Running)
	// Output:
	// blocked while waiting: 1
	// running again: 1
}

// GetBatch takes what is queued, up to len(dst), in one call that counts
// as one worker.
func ExampleWorker_GetBatch() {
	port, _ := iocp.NewPort(1)
	defer port.Close()
	for i := range 5 {
		port.Post(iocp.Packet{Bytes: i})
	}
	w := port.NewWorker()
	defer w.Close()
	dst := make([]iocp.Packet, 3)
	for range 2 {
		n, _ := w.GetBatch(context.Background(), dst)
		for _, pkt := range dst[:n] {
			fmt.Print(pkt.Bytes, " ")
		}
		fmt.Println("| a batch of", n)
	}
	// Output:
	// 0 1 2 | a batch of 3
	// 3 4 | a batch of 2
}

// Any blocking call can run as an overlapped operation: Do runs it on its
// own goroutine, and its result completes on the port.
func ExampleHandle_Do() {
	port, _ := iocp.NewPort(1)
	defer port.Close()
	h, _ := port.Associate(iocp.Func(func(ctx context.Context, ov *iocp.Overlapped) (int, error) {
		return len(ov.Value.(string)), nil // the handle's own function: Call runs it
	}), "lookups")
	call := iocp.Overlapped{Value: "hello"}
	h.Call(&call)
	do := iocp.Overlapped{}
	h.Do(&do, func(ctx context.Context, ov *iocp.Overlapped) (int, error) {
		select { // a Func that watches ctx can be cancelled
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Hour):
			return 1, nil
		}
	})
	h.Cancel(&do)
	w := port.NewWorker()
	defer w.Close()
	for range 2 {
		pkt, _ := w.Get(context.Background())
		if pkt.Overlapped == &call {
			fmt.Println("call:", pkt.Bytes, pkt.Err)
		} else {
			fmt.Println("do aborted:", errors.Is(pkt.Err, iocp.ErrAborted))
		}
	}
	// Unordered output:
	// call: 5 <nil>
	// do aborted: true
}

// A bounded queue refuses a Post when it is full, and loses nothing.
func ExampleWithQueueLimit() {
	port, _ := iocp.NewPort(1, iocp.WithQueueLimit(2))
	defer port.Close()
	for i := range 3 {
		fmt.Println("post", i, port.Post(iocp.Packet{Bytes: i}))
	}
	fmt.Println("queued:", port.Stats().Queued)
	// Output:
	// post 0 <nil>
	// post 1 <nil>
	// post 2 iocp: queue full
	// queued: 2
}

// Tasks run on the pool's workers under the port's concurrency value, and
// Wait returns the first error, as an errgroup's does.
func ExamplePool_Go() {
	port, _ := iocp.NewPort(2)
	pool, _ := port.NewPool(0, nil) // tasks only: no handler for posted packets
	defer pool.Close()
	var sum atomic.Int64
	for i := 1; i <= 10; i++ {
		pool.Go(func(ctx context.Context) error {
			if i == 7 {
				return fmt.Errorf("task %d failed", i)
			}
			sum.Add(int64(i))
			return nil
		})
	}
	fmt.Println(pool.Wait(), sum.Load())
	// Output:
	// task 7 failed 48
}

// An elastic pool: each handler waits for the others, marking the wait,
// so that eight packets are handled only once eight workers wait at once.
// The pool starts four workers (twice the concurrency value), and starts
// more, one at a time, while all of them are blocked and packets wait.
func ExampleWithMaxWorkers() {
	port, _ := iocp.NewPort(2)
	var all sync.WaitGroup
	all.Add(8)
	pool, _ := port.NewPool(0, func(ctx context.Context, pkt iocp.Packet) {
		all.Done()
		iocp.Blocking(ctx, all.Wait) // a database call, say
	}, iocp.WithMaxWorkers(8))
	for range 8 {
		port.Post(iocp.Packet{})
	}
	all.Wait()
	s := pool.Stats()
	pool.Shutdown(context.Background())
	fmt.Println("workers:", s.Workers, "started while blocked:", s.Grown)
	fmt.Println("after Shutdown:", pool.Workers())
	// Output:
	// workers: 8 started while blocked: 4
	// after Shutdown: 0
}

// A stalled handler is reported once, with the worker it holds.
func ExampleWithStallReport() {
	port, _ := iocp.NewPort(1)
	stalls := make(chan iocp.Stall, 1)
	pool, _ := port.NewPool(1, func(ctx context.Context, pkt iocp.Packet) {
		time.Sleep(200 * time.Millisecond) // stuck, and not marked as a wait
	}, iocp.WithStallReport(20*time.Millisecond, func(s iocp.Stall) { stalls <- s }))
	port.Post(iocp.Packet{})
	s := <-stalls
	fmt.Println("worker", s.Worker, "stalled:", s.Running >= 20*time.Millisecond)
	pool.Shutdown(context.Background())
	// Output: worker 0 stalled: true
}

// WithStallAsBlocked: a handler stuck without saying so loses its slot
// once it runs past the limit, and the next packet runs meanwhile.
func ExampleWithStallAsBlocked() {
	port, _ := iocp.NewPort(1)
	stuck, next := make(chan struct{}), make(chan struct{})
	pool, _ := port.NewPool(1, func(ctx context.Context, pkt iocp.Packet) {
		switch pkt.Key {
		case "stuck":
			<-stuck // a wait that is not marked with Blocking
		case "next":
			close(next)
		}
	}, iocp.WithStallReport(20*time.Millisecond, func(iocp.Stall) {}), iocp.WithStallAsBlocked())
	port.Post(iocp.Packet{Key: "stuck"})
	port.Post(iocp.Packet{Key: "next"})
	<-next // runs once "stuck" has run 20 ms
	fmt.Println("next ran; blocked:", port.Stats().Blocked)
	close(stuck)
	pool.Shutdown(context.Background())
	// Output: next ran; blocked: 1
}

// WithTimings keeps two histograms: how long packets waited in the queue,
// and how long their handlers ran.
func ExampleWithTimings() {
	port, _ := iocp.NewPort(2)
	pool, _ := port.NewPool(0, func(ctx context.Context, pkt iocp.Packet) {
		time.Sleep(time.Millisecond)
	}, iocp.WithTimings())
	for range 20 {
		port.Post(iocp.Packet{})
	}
	pool.Shutdown(context.Background())
	s := pool.Stats()
	fmt.Println("handled:", s.Handled, "timed:", s.Handling.Count, s.QueueWait.Count)
	fmt.Println("median handler at least 1ms:", s.Handling.Quantile(0.5) >= time.Millisecond)
	// Output:
	// handled: 20 timed: 20 20
	// median handler at least 1ms: true
}

// With WithCancelOnError, the first task to fail cancels the others'
// context, as errgroup.WithContext does.
func ExampleWithCancelOnError() {
	port, _ := iocp.NewPort(2)
	pool, _ := port.NewPool(0, nil, iocp.WithCancelOnError())
	defer pool.Close()
	pool.Go(func(ctx context.Context) error { return errors.New("the first fails") })
	pool.Go(func(ctx context.Context) error {
		<-ctx.Done() // would wait for ever without the cancel
		return ctx.Err()
	})
	fmt.Println(pool.Wait())
	// Output: the first fails
}

// Stats counts what the pool's handlers did.
func ExamplePool_Stats() {
	port, _ := iocp.NewPort(2)
	pool, _ := port.NewPool(0, nil, iocp.WithErrorHandler(func(error) {}))
	for i := range 10 {
		pool.Go(func(ctx context.Context) error {
			switch i {
			case 3:
				return errors.New("failed")
			case 5:
				panic("boom")
			}
			return nil
		})
	}
	pool.Wait()
	pool.Shutdown(context.Background())
	s := pool.Stats()
	fmt.Println("handled:", s.Handled, "failed:", s.Failed, "panicked:", s.Panicked, "in flight:", s.InFlight)
	// Output: handled: 10 failed: 1 panicked: 1 in flight: 0
}

// A service's handler runs its work on a pool that every request shares,
// under its request's context, and gets the result back typed. The
// function's own ctx carries the worker, so that Blocking frees its slot
// while it waits on the network.
func ExampleCall() {
	port, _ := iocp.NewPort(0)
	pool, _ := port.NewPool(0, nil)
	defer pool.Close()

	lookup := func(ctx context.Context, id int) (string, error) {
		var name string
		iocp.Blocking(ctx, func() { // a network or disk call: the slot goes to another request
			time.Sleep(time.Millisecond)
			name = fmt.Sprintf("item-%d", id)
		})
		return strings.ToUpper(name), nil // CPU work, within the concurrency value
	}

	reqCtx := context.Background() // r.Context() in an http.Handler
	name, err := iocp.Call(reqCtx, pool, func(ctx context.Context) (string, error) {
		return lookup(ctx, 42)
	})
	fmt.Println(name, err)
	// Output: ITEM-42 <nil>
}

// A request fans out to several backends on the shared pool, at most two
// at a time, and the first failure cancels the rest, as with errgroup.
func ExamplePool_Group() {
	port, _ := iocp.NewPort(0)
	pool, _ := port.NewPool(0, nil)
	defer pool.Close()

	g, ctx := pool.Group(context.Background()) // r.Context() in an http.Handler
	g.SetLimit(2)                              // what the downstream service can take
	parts := make([]int, 5)
	for i := range parts {
		g.Go(func(ctx context.Context) error {
			iocp.Blocking(ctx, func() { time.Sleep(time.Millisecond) })
			parts[i] = i * i
			return nil
		})
	}
	err := g.Wait()
	fmt.Println(parts, err, ctx.Err())
	// Output: [0 1 4 9 16] <nil> context canceled
}
