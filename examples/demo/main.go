// Command demo shows a completion port at work: waiting workers released
// newest first, the concurrency value holding packets back, a worker that
// blocks handing its slot on, and the overshoot after it unblocks; then a
// short run under load with the port's Stats printed as it goes. It takes
// no arguments and ends by itself in a few seconds.
package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iocp-go/iocp"
)

// A task is a packet's key in the narrated part: the worker that takes
// it reports so, then runs the steps the narrator sends until the channel
// is closed, and only then calls Get again.
type task struct {
	name  string
	steps chan func(w *iocp.Worker)
}

func newTask(name string) *task { return &task{name, make(chan func(*iocp.Worker))} }

// run has the worker that holds t run step, and returns once it has: the
// worker takes the empty step that follows only after step returned.
func (t *task) run(step func(*iocp.Worker)) {
	t.steps <- step
	t.steps <- func(*iocp.Worker) {}
}

var (
	port   *iocp.Port
	events = make(chan string) // workers' reports in the narrated part

	computing, maxComputing atomic.Int64 // workers doing CPU work in the load run
	processed               atomic.Int64
)

func main() {
	const concurrency, workers = 2, 4
	var err error
	port, err = iocp.NewPort(concurrency)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("A port with concurrency %d and %d workers (GOMAXPROCS %d).\n",
		concurrency, workers, runtime.GOMAXPROCS(0))

	fmt.Println("\n1. The workers call Get on the empty port, one after another.")
	var wg sync.WaitGroup
	for i := 1; i <= workers; i++ {
		wg.Go(func() { work(fmt.Sprintf("w%d", i)) })
		waitFor(func(s iocp.Stats) bool { return s.Waiting == i })
		say(fmt.Sprintf("w%d waits", i))
	}

	fmt.Println("\n2. Post A: the most recent waiter takes it (LIFO).")
	a, b, c, d := newTask("A"), newTask("B"), newTask("C"), newTask("D")
	post(a)
	say(<-events)

	fmt.Println("\n3. Post B, then C and D: two workers run, so C and D stay queued.")
	post(b)
	say(<-events)
	post(c)
	post(d)
	say("C, D queued")

	fmt.Println("\n4. w4 blocks on a slow call: its slot goes to the newest waiter, with the oldest packet.")
	a.run(func(w *iocp.Worker) { w.Block() })
	say(<-events)

	fmt.Println("\n5. w4's call returns: it runs again at once, past the concurrency value.")
	a.run(func(w *iocp.Worker) { w.Unblock() })
	say("w4 unblocked")

	fmt.Println("\n6. w3 finishes B and calls Get: two still run, so w3 waits and D stays queued.")
	close(b.steps)
	waitFor(func(s iocp.Stats) bool { return s.Waiting == 2 })
	say("w3 waits")

	fmt.Println("\n7. w2 finishes C and calls Get: one runs now, so w2 takes D at once; no one is woken.")
	wakeups := port.Stats().Wakeups
	close(c.steps)
	say(<-events)
	fmt.Printf("   wakeups during step 7: %d\n", port.Stats().Wakeups-wakeups)
	close(a.steps)
	close(d.steps)
	waitFor(func(s iocp.Stats) bool { return s.Waiting == workers })

	load(concurrency)

	if err := port.Shutdown(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	wg.Wait()
	fmt.Println("\nShut down: every worker returned, nothing left queued.")
}

// load posts packets from four goroutines for about a second while the
// workers do a little CPU work on each and block for a millisecond on one
// in two hundred.
func load(concurrency int) {
	const producers, perProducer = 4, 40_000
	fmt.Printf("\n8. Load: %d producers post %d packets; the workers compute on each and block for 1ms on one in 200.\n",
		producers, producers*perProducer)
	start := time.Now()
	var pw sync.WaitGroup
	for range producers {
		pw.Go(func() {
			for i := range perProducer {
				port.Post(iocp.Packet{Bytes: i})
				if i%400 == 399 {
					time.Sleep(10 * time.Millisecond) // a bursty source
				}
			}
		})
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for processed.Load() < producers*perProducer {
		select {
		case <-tick.C:
			say(fmt.Sprintf("%6d processed", processed.Load()))
		case <-time.After(10 * time.Millisecond):
		}
	}
	pw.Wait()
	elapsed := time.Since(start)
	fmt.Printf("   %d packets in %v; at most %d workers computing at once (concurrency %d, more only in an overshoot).\n",
		processed.Load(), elapsed.Round(time.Millisecond), maxComputing.Load(), concurrency)
}

// work is a worker's goroutine: Get, report or compute, repeat.
func work(name string) {
	w := port.NewWorker()
	defer w.Close()
	for {
		pkt, err := w.Get(context.Background())
		if err != nil { // iocp.ErrClosed: the port shut down
			return
		}
		if t, ok := pkt.Key.(*task); ok {
			events <- fmt.Sprintf("%s runs %s", name, t.name)
			for step := range t.steps {
				step(w)
			}
			continue
		}
		compute(pkt.Bytes)
		if pkt.Bytes%200 == 0 {
			w.Blocking(func() { time.Sleep(time.Millisecond) })
		}
		processed.Add(1)
	}
}

// compute burns a little CPU, and counts how many workers do so at once.
func compute(seed int) {
	n := computing.Add(1)
	for {
		m := maxComputing.Load()
		if n <= m || maxComputing.CompareAndSwap(m, n) {
			break
		}
	}
	x := uint64(seed)
	for range 10_000 {
		x = x*6364136223846793005 + 1442695040888963407
	}
	if x == 42 {
		fmt.Print("") // keep the loop
	}
	computing.Add(-1)
}

func post(t *task) {
	if err := port.Post(iocp.Packet{Key: t}); err != nil {
		panic(err)
	}
}

// say prints a line with the port's counters.
func say(msg string) {
	s := port.Stats()
	fmt.Printf("   %-16s running %d  blocked %d  waiting %d  queued %d  wakeups %d\n",
		msg, s.Running, s.Blocked, s.Waiting, s.Queued, s.Wakeups)
}

// waitFor polls the port's Stats until cond holds.
func waitFor(cond func(iocp.Stats) bool) {
	for !cond(port.Stats()) {
		time.Sleep(time.Millisecond)
	}
}
