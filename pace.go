package iocp

// Pacing: Blocking in a pool frees its slot only while the CPU has room.
//
// The port cannot see whether a region marked blocking waits or computes.
// A region that waits (a network call, a sleep, a lock held elsewhere)
// should hand its slot on, so that the CPU does other work; one that
// computes (an in-process database, which is CPU work on the caller's
// goroutine) should not: handing its slot on runs more goroutines than
// there are CPUs, which only adds latency and memory. Linux's workqueue
// draws the same line with the scheduler's help (a work item that sleeps
// stops counting, one that burns CPU does not); Go tells nobody when a
// goroutine parks, so the pool asks the CPU instead.
//
// While any Blocking region runs, the pacer, a goroutine of the pool,
// reads the process's CPU time every paceTick, and judges the CPU busy
// when the process used at least paceBusy of GOMAXPROCS since the last
// tick:
//   - While the CPU is not busy, a region frees its slot as Block does:
//     another worker can use the CPU. A region that kept its slot (below)
//     has it freed by the pacer (Worker.stall, as WithStallAsBlocked
//     does), which releases a waiter or grows the pool.
//   - While the CPU is busy, freeing more slots could only oversubscribe
//     it. The pacer sets a budget of regions that may have their slot
//     freed: a quarter under those that have it now when the CPU turns
//     busy, and a quarter less each busy tick, down to 0. A region
//     beyond the budget keeps its slot: it stays counted as running, as
//     Linux's workqueue goes on counting a work item that burns CPU. At
//     0, CPU work wrapped in Blocking is bounded by the concurrency
//     value, as a semaphore of GOMAXPROCS would bound it.
// A region that waits leaves the CPU room, and the next tick hands its
// slot on; one that computes keeps the CPU busy, and keeps its slot. The
// pacer's reaction is a tick or two (BenchmarkPace measures it). Regions
// whose slot is freed are never taken back: a region cannot be preempted;
// when it ends, Unblock's overshoot holds further releases until the
// count is below the concurrency value again.
//
// Worker.Block and Unblock stay exact (S29, S30): pacing is Blocking's,
// on pools of pure-Go ports. Native ports count blocked threads in the
// kernel, which sees them wait.

import (
	"runtime"
	"sync/atomic"
	"time"
)

const (
	paceTick = time.Millisecond // how often the pacer looks at the CPU
	paceBusy = 0.9              // the CPU is busy: the process used this share of GOMAXPROCS
	// paceLinger is how many ticks the pacer goes on after the last
	// region ended before it exits, so that a steady trickle of regions
	// does not start a goroutine for each.
	paceLinger = 100
)

// pacer is a pool's Blocking budget; see the comment at the top.
type pacer struct {
	busy    atomic.Bool  // the CPU was busy at the last tick; false while no pacer runs
	budget  atomic.Int64 // while busy: the regions that may have their slot freed
	handed  atomic.Int64 // regions now whose slot is freed (or about to be)
	kept    atomic.Int64 // regions now that keep their slot
	running atomic.Bool  // the pacer goroutine runs
	serial  atomic.Int64 // numbers the kept regions, for Worker.stall
}

// blocking runs fn, a Blocking region of w, a worker of pl whose counters
// are c: it frees w's slot if the budget allows, and otherwise keeps it
// and lists the region for the pacer to free.
func (pl *Pool) blocking(w *Worker, c *workerCounters, fn func()) {
	pc := &pl.pace
	// handed is raised before budget is read, so that the regions that
	// pass never outnumber the budget the last of them read.
	if h := pc.handed.Add(1); !pc.busy.Load() || h <= pc.budget.Load() {
		defer pc.handed.Add(-1)
		pl.startPacer()
		w.Block()
		defer w.Unblock()
		fn()
		return
	}
	pc.handed.Add(-1)
	// Kept: counted as running. The region's number goes in c.region
	// before it is listed, so that the pacer, which stalls w only if
	// c.region still holds the number it read, never frees the slot of a
	// region that has ended.
	c.region.Store(pc.serial.Add(1))
	pc.kept.Add(1)
	pl.startPacer()
	defer func() {
		c.region.Store(0)
		pc.kept.Add(-1)
		// If the pacer freed the slot, take one back, as Unblock does
		// (unless a Block and Unblock inside fn did already). Whoever
		// clears c.paced, this or the pacer's undo, gives back the place
		// in handed that the pacer took.
		if c.paced.CompareAndSwap(true, false) {
			if w.state.CompareAndSwap(stateStalled, stateRunning) {
				w.p.gate.Add(oneRunning)
				w.p.blocked.Add(-1)
			}
			pc.handed.Add(-1)
		}
	}()
	fn()
}

// startPacer starts the pacer goroutine if it does not run.
func (pl *Pool) startPacer() {
	if pl.pace.running.Load() || !pl.pace.running.CompareAndSwap(false, true) {
		return
	}
	pl.live.Add(1) // the pacer ends with the workers: see exit
	go pl.pacer()
}

// pacer adjusts the budget while regions run, and frees the slots of kept
// regions while the CPU has room. It exits when the port closes, or
// paceLinger ticks after the last region ended.
func (pl *Pool) pacer() {
	defer pl.exit()
	pc := &pl.pace
	t := time.NewTicker(paceTick)
	defer t.Stop()
	cpu, at := processCPU(), time.Now()
	quiet := 0
	for {
		select {
		case <-pl.port.done:
			pc.busy.Store(false)
			pc.running.Store(false)
			return
		case <-t.C:
		}
		cpu1, at1 := processCPU(), time.Now()
		share := float64(cpu1-cpu) / float64(at1.Sub(at)) / float64(runtime.GOMAXPROCS(0))
		cpu, at = cpu1, at1
		busy := share >= paceBusy
		kept := pc.kept.Load()
		switch {
		case !busy:
			pc.busy.Store(false)
			if kept > 0 {
				pl.freeKept()
			}
		case !pc.busy.Load():
			h := pc.handed.Load()
			pc.budget.Store(max(0, h-max(1, h/4)))
			pc.busy.Store(true)
		default:
			b := pc.budget.Load()
			pc.budget.Store(max(0, b-max(1, b/4)))
		}
		if kept != 0 || pc.handed.Load() != 0 {
			quiet = 0
			continue
		}
		if quiet++; quiet < paceLinger {
			continue
		}
		// Exit, unless a region started after the loads above: it may
		// have seen running still true and started no pacer.
		pc.busy.Store(false)
		pc.running.Store(false)
		if pc.kept.Load() == 0 && pc.handed.Load() == 0 || !pc.running.CompareAndSwap(false, true) {
			return
		}
		quiet = 0
	}
}

// freeKept frees the slots of the kept regions.
func (pl *Pool) freeKept() {
	for _, c := range *pl.counters.Load() {
		r := c.region.Load()
		if r == 0 {
			continue
		}
		w := c.w.Load()
		if w == nil {
			continue
		}
		// handed counts the region before its slot is freed; the
		// region's end gives it back.
		c.paced.Store(true)
		pl.pace.handed.Add(1)
		if !w.stall(&c.region, r) {
			if c.paced.CompareAndSwap(true, false) {
				pl.pace.handed.Add(-1)
			}
		}
	}
}
