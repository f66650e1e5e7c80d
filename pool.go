package iocp

import (
	"context"
	"errors"
	"fmt"
	"log"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// A Handler handles one packet in a Pool. ctx carries the worker that runs
// it (see FromContext and Blocking), the pool's pprof labels, and is
// cancelled when the pool is closed.
type Handler func(ctx context.Context, pkt Packet)

// A Pool is a set of workers that serve a port, each on its own goroutine,
// each calling a handler for every packet it takes: the pre-allocated
// thread pool of the Windows documentation, and with Bind the counterpart
// of BindIoCompletionCallback. Port.NewPool makes one.
//
// A handler marks its waits with Blocking(ctx, fn) or FromContext(ctx), so
// that another worker runs in its place; that is why a pool has more
// workers than the concurrency value (twice as many by default, the
// reference's rule of thumb). A panic in a handler is recovered and
// reported with the packet and the stack (WithErrorHandler); the worker's
// slot is freed, and the pool goes on serving with the same number of
// workers.
//
// The pool is elastic, as the Windows thread pool is: when packets are
// queued, a slot of the concurrency value is free and no worker waits to
// take it (every worker is blocked), the pool starts another worker, one
// at a time, up to the maximum of WithMaxWorkers. A worker beyond NewPool's
// n that finds no packet for the period of WithIdleTimeout retires. The
// concurrency value bounds the running workers however many there are.
//
// Each worker goroutine carries the pprof labels "iocp.port" (the port's
// Name) and "iocp.worker" (its index, 0 to n-1), so CPU and goroutine
// profiles show which port's work they ran; while runtime/trace is
// tracing, each packet runs in a region named "iocp.packet".
//
// The zero Pool is not usable, and a Pool must not be copied. Its methods
// are safe for concurrent use.
type Pool struct {
	port    *Port
	handler Handler
	onError func(error)
	n       int           // the workers it keeps: NewPool's n
	max     int           // the most it runs (WithMaxWorkers); n when fixed
	idle    time.Duration // how long a worker beyond n waits before it retires

	ctx    context.Context // the handlers' context, without the worker
	cancel context.CancelFunc

	// Tasks (task.go). taskCtx is ctx, or a child of it that the first
	// error cancels (WithCancelOnError).
	tasks      sync.WaitGroup // Go's tasks not yet run or discarded
	taskCtx    context.Context
	taskCancel context.CancelFunc // nil without WithCancelOnError
	errOnce    sync.Once
	err        error // the first task error; written once, under errOnce

	// Elastic workers: grow and retire. size and starting change under mu;
	// the fast checks load them without it.
	mu       sync.Mutex
	free     []int        // indexes of retired workers, for the next to start; guarded by mu
	size     atomic.Int64 // workers now
	starting atomic.Int64 // workers started whose first Get has not returned
	grown    atomic.Uint64
	retired  atomic.Uint64

	// counters holds one per worker index, appended to under mu: see Stats.
	counters atomic.Pointer[[]*workerCounters]

	// Stall reports (WithStallReport); read-only after NewPool.
	stallLimit time.Duration
	onStall    func(Stall)
	stallBlock bool          // WithStallAsBlocked
	epoch      time.Time     // what workerCounters.started counts from: the queue's epoch
	timings    bool          // WithTimings; read-only after NewPool
	timed      bool          // timings or a stall report: handlers' starts are timed
	live       atomic.Int64  // worker goroutines that have not returned
	done       chan struct{} // closed by the last worker to return

	// discard is set by Close: the workers drop the posted packets they
	// take, as Port.Close would have, and deliver only completions.
	discard atomic.Bool
}

// A PoolOption configures a pool made by Port.NewPool.
type PoolOption func(*poolConfig) error

type poolConfig struct {
	onError       func(error)
	max           int
	idle          time.Duration
	timings       bool
	stallLimit    time.Duration
	onStall       func(Stall)
	stallBlock    bool
	parent        context.Context
	cancelOnError bool
}

// WithContext makes ctx the parent of the context the pool's handlers and
// tasks run with: when ctx ends, theirs does. The pool itself goes on
// serving until it is closed. ctx must not be nil.
func WithContext(ctx context.Context) PoolOption {
	return func(c *poolConfig) error {
		if ctx == nil {
			return fmt.Errorf("%w: nil Context", ErrInvalid)
		}
		c.parent = ctx
		return nil
	}
}

// WithMaxWorkers bounds the workers of an elastic pool (see Pool): it
// starts workers beyond NewPool's n while every worker is blocked, up to
// max. max == n makes a fixed pool. Without it the maximum is 256, or n if
// that is more: past a few hundred, more workers for one port usually mean
// handlers stuck on one thing, which more goroutines do not fix. A max
// below n, which NewPool reports, or above 1<<20 is an error.
func WithMaxWorkers(max int) PoolOption {
	return func(c *poolConfig) error {
		if max < 1 || max > maxWorkers {
			return fmt.Errorf("%w: WithMaxWorkers(%d), out of range [1, %d]", ErrInvalid, max, maxWorkers)
		}
		c.max = max
		return nil
	}
}

// WithIdleTimeout sets how long a worker beyond NewPool's n waits for a
// packet before it retires; 10 seconds without it. d must be positive.
func WithIdleTimeout(d time.Duration) PoolOption {
	return func(c *poolConfig) error {
		if d <= 0 {
			return fmt.Errorf("%w: WithIdleTimeout(%v), not positive", ErrInvalid, d)
		}
		c.idle = d
		return nil
	}
}

// The defaults of WithMaxWorkers and WithIdleTimeout.
const (
	defaultMaxWorkers  = 256
	defaultIdleTimeout = 10 * time.Second
)

// A Stall reports a handler, callback or task that has run longer than
// the limit given to WithStallReport: the worker it runs on, which is that
// goroutine's "iocp.worker" pprof label, and how long it has run so far.
type Stall struct {
	Worker  int
	Running time.Duration
}

// WithStallReport has the pool call fn, on a goroutine of its own, once for
// each packet whose handler has run longer than limit, so that a stuck
// handler, which holds a slot of the concurrency value, is seen; Stats
// counts those running so long now. The pool looks four times a limit. A
// handler that waits on purpose should say so with Blocking instead: it
// is then not counted against the port, though it is still reported.
// limit must be positive and fn not nil.
func WithStallReport(limit time.Duration, fn func(Stall)) PoolOption {
	return func(c *poolConfig) error {
		switch {
		case limit <= 0:
			return fmt.Errorf("%w: WithStallReport limit %v, not positive", ErrInvalid, limit)
		case fn == nil:
			return fmt.Errorf("%w: WithStallReport with a nil fn", ErrInvalid)
		}
		c.stallLimit, c.onStall = limit, fn
		return nil
	}
}

// WithStallAsBlocked has the pool count a handler that runs past the
// limit of WithStallReport as blocked, as if it had called Block: its
// slot of the concurrency value goes to a waiting worker, or to one the
// pool starts, so that handlers stuck on something the port cannot see
// do not hold up the queue. When such a handler returns, its worker takes
// a slot again as a new worker does, waiting if Concurrency workers run;
// a Block in it marks it blocked as usual, and after its Unblock the
// pool looks again. It needs WithStallReport, and a pure-Go port: a
// native port's running threads are the kernel's to count.
//
// A handler that has just ended may be caught as it ends: it is then
// counted as blocked for a moment, or its worker runs one more packet
// beyond the concurrency value, as after an Unblock.
func WithStallAsBlocked() PoolOption {
	return func(c *poolConfig) error {
		c.stallBlock = true
		return nil
	}
}

// WithTimings has the pool measure every packet: how long it waited in
// the port's queue, and how long its handler ran, into the two histograms
// of PoolStats. It costs two or three reads of the monotonic clock a
// packet (tens of nanoseconds), and allocates nothing; the histograms
// are each worker's own, summed by Stats. Packets queued before NewPool
// have no queue time.
func WithTimings() PoolOption {
	return func(c *poolConfig) error {
		c.timings = true
		return nil
	}
}

// WithCancelOnError has the first task of Pool.Go that returns an error,
// or panics, cancel the context of every task, as errgroup.WithContext
// does. Handlers' contexts are not affected.
func WithCancelOnError() PoolOption {
	return func(c *poolConfig) error {
		c.cancelOnError = true
		return nil
	}
}

// WithErrorHandler has the pool report handler panics to fn, each as a
// *PanicError, on the goroutine of the worker that recovered it, and the
// posted packets of a pool that has no handler. Without it the pool logs
// them with the log package, a panic's stack included, as net/http does
// for its handlers. fn must not be nil.
func WithErrorHandler(fn func(error)) PoolOption {
	return func(c *poolConfig) error {
		if fn == nil {
			return fmt.Errorf("%w: nil error handler", ErrInvalid)
		}
		c.onError = fn
		return nil
	}
}

// ErrGoexit is the Value of the PanicError that a Pool reports for a
// handler that called runtime.Goexit (as t.FailNow and log.Fatal-style
// helpers may): the goroutine ends, and a new one takes its worker's place.
var ErrGoexit = errors.New("iocp: handler called runtime.Goexit")

// A PanicError is a panic recovered from a Pool's handler, or a handler's
// runtime.Goexit (Value is ErrGoexit).
type PanicError struct {
	Packet Packet // the packet the handler was given
	Value  any    // what the handler panicked with
	Stack  []byte // the handler goroutine's stack at the panic
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("iocp: handler panic: %v (packet key %v)", e.Value, e.Packet.Key)
}

// Unwrap returns the panic value if it is an error, and nil otherwise.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// NewPool starts n workers that serve p, each taking packets with its own
// Worker and calling handler for each one, with packets from bound handles
// (see Pool.Bind) going to their own callbacks, and tasks (Pool.Go) run as
// they are, instead. handler may be nil for a pool that only serves bound
// handles and tasks: a packet posted to it is reported to the error
// handler. n == 0 means twice the port's concurrency value at this moment.
// The pool keeps n workers, and starts more while they are all blocked
// (see Pool, WithMaxWorkers). n < 0 or n > 1<<20 (from NewPool(0) too),
// an invalid option, and a closed or draining port are errors.
//
// The pool owns the port's shutdown: Pool.Shutdown drains and closes the
// port, Pool.Close closes it, and both wait for the workers. A port is
// served by one pool, possibly with workers of its own besides: they then
// see the packets of bound handles too, whose Key is the Handle.
func (p *Port) NewPool(n int, handler Handler, opts ...PoolOption) (*Pool, error) {
	if n < 0 {
		return nil, fmt.Errorf("%w: pool of %d workers", ErrInvalid, n)
	}
	if n == 0 {
		n = 2 * p.Concurrency()
	}
	if n > maxWorkers {
		return nil, fmt.Errorf("%w: pool of %d workers, more than %d", ErrInvalid, n, maxWorkers)
	}
	c := poolConfig{onError: logPanic, parent: context.Background()}
	for _, opt := range opts {
		if opt == nil {
			return nil, fmt.Errorf("%w: nil PoolOption", ErrInvalid)
		}
		if err := opt(&c); err != nil {
			return nil, err
		}
	}
	switch {
	case c.max == 0:
		c.max = max(n, defaultMaxWorkers)
	case c.max < n:
		return nil, fmt.Errorf("%w: WithMaxWorkers(%d) below the pool's %d workers", ErrInvalid, c.max, n)
	}
	if c.idle == 0 {
		c.idle = defaultIdleTimeout
	}
	switch {
	case c.stallBlock && c.onStall == nil:
		return nil, fmt.Errorf("%w: WithStallAsBlocked without WithStallReport", ErrInvalid)
	case c.stallBlock && p.native != nil:
		return nil, fmt.Errorf("%w: WithStallAsBlocked on a native port, whose running threads the kernel counts", ErrInvalid)
	}
	if refusing(p.gate.Load()) {
		return nil, ErrClosed
	}
	pl := &Pool{port: p, handler: handler, onError: c.onError, n: n, max: c.max, idle: c.idle, done: make(chan struct{})}
	pl.timings, pl.timed = c.timings, c.timings || c.onStall != nil
	counters := make([]*workerCounters, n)
	for i := range counters {
		counters[i] = pl.newCounters()
	}
	pl.counters.Store(&counters)
	pl.size.Store(int64(n))
	pl.starting.Store(int64(n))
	pl.stallLimit, pl.onStall, pl.stallBlock, pl.epoch = c.stallLimit, c.onStall, c.stallBlock, p.epoch
	if c.timings {
		p.stamping.Store(true) // pushes record their time from here on
	}
	pl.ctx, pl.cancel = context.WithCancel(c.parent)
	pl.taskCtx = pl.ctx
	if c.cancelOnError {
		pl.taskCtx, pl.taskCancel = context.WithCancel(pl.ctx)
	}
	p.pool.Store(pl)
	pl.live.Store(int64(n))
	if pl.onStall != nil {
		pl.live.Add(1) // the watcher ends with the workers: see exit
		go pl.watch()
	}
	for i := range n {
		go pl.serve(i, true)
	}
	return pl, nil
}

// maxWorkers bounds a pool: a million goroutines is well past any use of
// one, and a mistake such as NewPool(0) on a port of concurrency 1<<30
// gets an error instead of exhausting memory.
const maxWorkers = 1 << 20

// logPanic is a pool's error handler unless WithErrorHandler replaces it.
// A pool reports its handlers' panics, with their stacks, and posted
// packets that it has no handler for.
func logPanic(err error) {
	if pe, ok := err.(*PanicError); ok {
		log.Printf("%v\n%s", err, pe.Stack)
		return
	}
	log.Print(err)
}

// Port returns the port the pool serves.
func (pl *Pool) Port() *Port { return pl.port }

// Workers returns the number of workers in the pool now: NewPool's n, and
// those it started since while its workers were blocked (see Pool).
func (pl *Pool) Workers() int { return int(pl.size.Load()) }

// A member is one worker goroutine's own state.
type member struct {
	i     int // its index: the "iocp.worker" label, and its counters
	c     *workerCounters
	fresh bool // its first Get has not returned: counted in Pool.starting
}

// serve is the goroutine of worker i: it runs with the pool's pprof labels
// until the port closes or the worker retires. A handler that calls
// runtime.Goexit ends the goroutine whatever serve does (next reports it):
// a new goroutine then takes worker i's place, so that the pool keeps its
// size. fresh says the worker was just started, or replaced (Pool.starting).
func (pl *Pool) serve(i int, fresh bool) {
	returned := false
	defer func() {
		if !returned {
			go pl.serve(i, true) // runtime.Goexit: panics are recovered per packet
			return
		}
		pl.exit()
	}()
	m := &member{i: i, c: (*pl.counters.Load())[i], fresh: fresh}
	labels := pprof.Labels("iocp.port", pl.port.Name(), "iocp.worker", strconv.Itoa(i))
	pprof.Do(pl.ctx, labels, func(ctx context.Context) { pl.loop(ctx, m) })
	returned = true
}

// loop runs one of the pool's workers until the port closes or it retires.
// A handler that panics leaves its worker in whatever state it was in
// (running, or blocked by a Block without its Unblock): the worker is
// closed, which frees its slot, and a new one takes its place.
func (pl *Pool) loop(ctx context.Context, m *member) {
	for pl.port.gate.Load()&closedBit == 0 && pl.work(ctx, m) {
	}
}

// work serves the port with one Worker until the port closes, the worker
// retires, or a handler panics, and reports whether that last was why.
func (pl *Pool) work(ctx context.Context, m *member) bool {
	w := pl.port.NewWorker()
	defer w.Close()
	m.c.w.Store(w) // for the watcher (WithStallAsBlocked)
	ctx = NewContext(ctx, w)
	tctx := ctx // the tasks' context, with the worker and the pool's labels
	if pl.taskCancel != nil {
		tctx = NewContext(pl.taskCtx, w) // without the pprof labels' context values
	}
	for {
		switch pl.next(ctx, tctx, w, m) {
		case stepStop:
			return false
		case stepPanicked:
			return true
		}
	}
}

// What next did: handled a packet, ended with the port or retired, or
// lost its Worker to a handler's panic.
const (
	stepServed = iota
	stepStop
	stepPanicked
)

// next takes one packet and handles it.
func (pl *Pool) next(ctx, tctx context.Context, w *Worker, m *member) (step int) {
	var buf [1]Packet
	_, err := pl.get(w, m, buf[:])
	if m.fresh {
		m.fresh = false
		pl.arrived()
	}
	if err != nil {
		return stepStop
	}
	c := m.c
	pkt := buf[0]
	if !pl.port.settleOne(&pkt) && pl.discard.Load() {
		pl.port.discarded.Add(1) // posted, and Close came first
		pl.dropped(&pkt)
		return stepServed
	}
	start := pl.begin(c, w)
	step = stepPanicked // until the handler returns
	defer func() {
		if step != stepPanicked {
			return
		}
		pl.end(c, start)
		// A nil recover here is runtime.Goexit (panic(nil) recovers a
		// *runtime.PanicNilError): the goroutine is ending, work's
		// deferred Close still runs, and serve starts its successor.
		r := recover()
		if r == nil {
			r = ErrGoexit
		}
		// The worker's successor is new to the port until its first Get,
		// as a worker just started is: the port must not start another
		// for the moment between the two (see grow).
		pl.starting.Add(1)
		m.fresh = true
		pe := &PanicError{Packet: pkt, Value: r, Stack: debug.Stack()}
		c.add(&c.handled)
		c.add(&c.panicked)
		pl.onError(pe)
		if _, ok := pkt.Key.(task); ok {
			pl.taskDone(pe)
		}
	}()
	if trace.IsEnabled() {
		defer trace.StartRegion(ctx, "iocp.packet").End()
	}
	err = pl.dispatch(ctx, tctx, pkt)
	pl.end(c, start)
	if err != nil {
		c.add(&c.failed)
	}
	c.add(&c.handled)
	return stepServed
}

// begin marks the start of a handler on the worker whose counters are c,
// records the packet's queue wait (WithTimings), and returns the start's
// time: nanoseconds from the pool's epoch with WithTimings or
// WithStallReport, and 0 without, which costs no clock read.
func (pl *Pool) begin(c *workerCounters, w *Worker) int64 {
	var start int64
	if pl.timed {
		start = int64(time.Since(pl.epoch))
		if c.t != nil && w.at[0] != 0 {
			c.t.wait.record(start - (w.at[0] - 1)) // see queue.now
		}
	}
	c.started.Store(start | 1) // never 0, which says no handler runs
	return start
}

// end marks the end of the handler that begin marked.
func (pl *Pool) end(c *workerCounters, start int64) {
	c.started.Store(0)
	if c.t != nil {
		c.t.run.record(int64(time.Since(pl.epoch)) - start)
	}
}

// errRetired ends the Get of a worker that retires.
var errRetired = errors.New("iocp: worker retired")

// get takes a worker's next packet; the port's Close ends the wait
// (ErrClosed). While the pool has more than n workers, a worker that is
// given no packet for the idle timeout retires (errRetired), if the pool
// still has more than n by then. On the pure-Go port the wait's timer is
// the worker's own, made once; on a native port the wait takes a context
// with a deadline, which allocates, as its kernel wait with any context
// that can end does.
func (pl *Pool) get(w *Worker, m *member, buf []Packet) (int, error) {
	for {
		if pl.size.Load() <= int64(pl.n) {
			return w.get(context.Background(), buf, true)
		}
		var n int
		var err error
		if pl.port.native == nil {
			w.idle = pl.idle
			n, err = w.get(context.Background(), buf, true)
			w.idle = 0
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), pl.idle)
			n, err = w.get(ctx, buf, true)
			cancel()
		}
		if err != errIdle && err != context.DeadlineExceeded {
			return n, err
		}
		if pl.retire(m.i) {
			return 0, errRetired
		}
	}
}

// grow starts one more worker if the pool may have one and none is
// starting: the port calls it when packets wait with a slot free and no
// worker to take it (Port.starve). One start at a time, each ending with
// the new worker's first Get (arrived), bounds the workers started for
// one such moment to those it needs: a worker that starts and finds the
// port still starved starts the next.
func (pl *Pool) grow() {
	if pl.starting.Load() != 0 || pl.size.Load() >= int64(pl.max) {
		return // the fast answer, without mu, on every starved Post
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.starting.Load() != 0 || pl.size.Load() >= int64(pl.max) || !pl.join() {
		return
	}
	var i int
	if k := len(pl.free); k > 0 {
		i, pl.free = pl.free[k-1], pl.free[:k-1]
	} else {
		cs := *pl.counters.Load()
		i = len(cs)
		cs = append(cs[:i:i], pl.newCounters()) // a new array: Stats reads the old
		pl.counters.Store(&cs)
	}
	pl.size.Add(1)
	pl.starting.Add(1)
	pl.grown.Add(1)
	go pl.serve(i, true)
}

// join counts one more goroutine of the pool's, unless the last has
// returned or the port has closed.
func (pl *Pool) join() bool {
	for {
		n := pl.live.Load()
		if n == 0 || pl.port.gate.Load()&closedBit != 0 {
			return false
		}
		if pl.live.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// arrived ends a start: a new worker's first Get has returned. If the port
// is still starved, it starts the next.
func (pl *Pool) arrived() {
	pl.starting.Add(-1)
	p := pl.port
	if p.starved(p.gate.Load()) && !p.queueEmpty() {
		pl.grow()
	}
}

// retire takes one worker off the pool, if it has more than n, and
// reports whether it did. The worker's index goes to the next to start.
func (pl *Pool) retire(i int) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.size.Load() <= int64(pl.n) {
		return false
	}
	pl.size.Add(-1)
	pl.retired.Add(1)
	pl.free = append(pl.free, i)
	return true
}

// exit ends one of the pool's goroutines: the last one cancels the
// handlers' context and closes done.
func (pl *Pool) exit() {
	if pl.live.Add(-1) == 0 {
		pl.cancel()
		close(pl.done)
	}
}

// watch reports stalled handlers (WithStallReport) until the port closes.
func (pl *Pool) watch() {
	defer pl.exit()
	t := time.NewTicker(pl.stallLimit / 4)
	defer t.Stop()
	for {
		select {
		case <-pl.port.done:
			return
		case <-t.C:
		}
		now := int64(time.Since(pl.epoch))
		for i, c := range *pl.counters.Load() {
			s := c.started.Load()
			if s == 0 || time.Duration(now-s) <= pl.stallLimit {
				continue
			}
			if pl.stallBlock {
				// Each look, not once a packet: after a Block and its
				// Unblock the handler is counted again, and stalls again.
				if w := c.w.Load(); w != nil {
					w.stall(&c.started, s)
				}
			}
			if c.reported == s {
				continue
			}
			c.reported = s // once a packet
			pl.onStall(Stall{Worker: i, Running: time.Duration(now - s)})
		}
	}
}

// dispatch calls the handler for pkt: the callback of the bound handle
// that pkt completes an operation of, or the pool's handler.
// It returns a task's error, and nil for the rest.
func (pl *Pool) dispatch(ctx, tctx context.Context, pkt Packet) error {
	switch k := pkt.Key.(type) {
	case *Handle:
		if k.callback != nil {
			k.callback(ctx, pkt)
			return nil
		}
	case task:
		err := k(tctx)
		pl.taskDone(err)
		return err
	}
	if pl.handler == nil {
		pl.onError(fmt.Errorf("iocp: a packet posted to a pool with no handler (key %v)", pkt.Key))
		return nil
	}
	pl.handler(ctx, pkt)
	return nil
}

// workerCounters are one worker's counts, written by its goroutine only
// (a load and a store, no read-modify-write on a shared line) and summed by
// Stats. Each sits on a cache line of its own: at 64 cores a pool-wide
// counter would be one more line that every packet moves.
type workerCounters struct {
	handled, panicked, failed atomic.Uint64
	// started is when the handler running now started, in nanoseconds
	// from Pool.epoch, with its low bit set, or 1 if the pool does not
	// time handlers (see begin); 0 when none runs.
	started  atomic.Int64
	reported int64    // the started value last reported; the watcher's own
	t        *timings // WithTimings; read-only
	// w is the worker that runs with these counters now, for the watcher
	// to stall (WithStallAsBlocked); it changes when a worker is replaced.
	w atomic.Pointer[Worker]
	_ [cacheLine - 56]byte
}

// newCounters returns a new worker's counters, with timings if the pool
// keeps them.
func (pl *Pool) newCounters() *workerCounters {
	c := new(workerCounters)
	if pl.timings {
		c.t = new(timings)
	}
	return c
}

// add counts one on a counter that only the calling worker writes.
func (c *workerCounters) add(n *atomic.Uint64) { n.Store(n.Load() + 1) }

// PoolStats is a snapshot of a pool's counters, summed over its workers
// one after another; see Port.Stats for the port's.
type PoolStats struct {
	Workers  int    // the pool's workers now
	Grown    uint64 // workers started beyond NewPool's n while all were blocked
	Retired  uint64 // of those, the ones that retired, idle
	Handled  uint64 // packets, completions and tasks handled, panics included
	Panicked uint64 // of those, the handlers and tasks that panicked or called runtime.Goexit
	Failed   uint64 // tasks of Go that returned an error
	// InFlight counts the handlers, callbacks and tasks running now.
	InFlight int
	// Stalled counts the handlers running now for longer than the limit
	// of WithStallReport; 0 without it.
	Stalled int
	// With WithTimings, QueueWait has how long packets waited, from the
	// Post, PostBatch or completion that queued them to the Get of the
	// worker that took them, and Handling how long their handlers ran.
	// On a native port the kernel's queue keeps no time: QueueWait
	// stays empty.
	QueueWait, Handling Histogram
}

// Stats returns the pool's counters.
func (pl *Pool) Stats() PoolStats {
	s := PoolStats{Workers: pl.Workers(), Grown: pl.grown.Load(), Retired: pl.retired.Load()}
	now := int64(time.Since(pl.epoch))
	for _, c := range *pl.counters.Load() {
		st := c.started.Load()
		if st != 0 {
			s.InFlight++
		}
		if pl.onStall != nil && st != 0 && time.Duration(now-st) > pl.stallLimit {
			s.Stalled++
		}
		if c.t != nil {
			s.QueueWait.add(&c.t.wait)
			s.Handling.add(&c.t.run)
		}
		s.Handled += c.handled.Load()
		s.Panicked += c.panicked.Load()
		s.Failed += c.failed.Load()
	}
	return s
}

// Bind associates source with the pool's port and has fn called, by the
// pool's workers, for each completion of the operations started on the
// returned Handle: BindIoCompletionCallback. The packets of a bound handle
// carry the Handle itself as their Key, so that fn can start the next
// operation on it. source is as for Port.Associate; a source already
// associated, bound or not, returns ErrAssociated, and a nil fn is an
// error.
func (pl *Pool) Bind(source any, fn Handler) (*Handle, error) {
	if fn == nil {
		return nil, fmt.Errorf("%w: nil Handler", ErrInvalid)
	}
	return pl.port.associate(source, nil, fn)
}

// Shutdown shuts the pool down gracefully, as http.Server.Shutdown does a
// server. It begins as Port.Shutdown does: new Posts and Accepts return
// ErrClosed, the Accepts pending on the port's listeners are aborted, and
// the workers go on serving until the port is quiet, with no packet
// queued, no handler running, and no write, positional operation or
// function pending. Handlers meanwhile start operations on their handles
// as usual (but Accept), and may Bind or Associate new sources. Then
// Shutdown closes every handle of the port, which aborts the reads that
// wait on peers, and the workers deliver those aborted operations' packets
// to their callbacks or to the handler, so that per-connection cleanup
// runs; once every operation has completed, the port closes, and Shutdown
// waits for every worker to exit.
//
// If ctx ends first it returns ctx.Err(): the pool goes on as it was, and
// Shutdown may be called again, or Close, which discards the posted
// packets still queued. A second Shutdown, or one after Close, waits in
// the same way and returns nil once the workers are gone.
//
// A handler must not call Shutdown or Close of its own pool: they wait for
// it. Shutdown of the Default pool panics.
func (pl *Pool) Shutdown(ctx context.Context) error {
	pl.mustNotBeDefault("Shutdown")
	mustContext(ctx)
	p := pl.port
	if p.beginDrain() {
		if err := p.drain(ctx, false); err != nil {
			return err
		}
	}
	if err := pl.finish(ctx); err != nil {
		return err
	}
	return pl.wait(ctx)
}

// Close closes the pool at once: new Posts and Accepts return ErrClosed,
// the handlers' context is cancelled, the posted packets still queued are
// discarded (Stats.Discarded counts them), and every handle of the port is
// closed, each pending operation aborted. The workers deliver the
// completions, aborted or not, to their callbacks or to the handler, so
// that per-connection cleanup runs, and Close then closes the port and
// waits for every worker to return from its handler and exit. It returns
// nil, every time.
//
// An operation that its source cannot interrupt (a plain io.Reader, a
// Func that ignores its context) holds Close until it ends, as a handler
// that does not return does.
//
// Close of the Default pool panics.
func (pl *Pool) Close() error {
	pl.mustNotBeDefault("Close")
	pl.close()
	return nil
}

func (pl *Pool) close() {
	pl.discard.Store(true)
	pl.port.beginDrain()
	pl.cancel()
	pl.finish(context.Background())
	<-pl.done
}

// finish closes the handles of the pool's draining port, waits until the
// workers have delivered every operation's packet and no handler runs,
// and closes the port.
func (pl *Pool) finish(ctx context.Context) error {
	p := pl.port
	p.closeHandles()
	if err := p.drain(ctx, true); err != nil {
		return err
	}
	if err := p.drainSealed(ctx, true); err != nil {
		return err
	}
	return p.Close()
}

func (pl *Pool) wait(ctx context.Context) error {
	select {
	case <-pl.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// The default pool, made on first use.
var defaultPool struct {
	sync.Mutex
	pl *Pool // guarded by the mutex
}

// Default returns the process's default pool, making it on first use: a
// port named "default" whose concurrency value follows GOMAXPROCS,
// served by twice GOMAXPROCS workers at the time it is made. It is the
// counterpart of the system thread pool that BindIoCompletionCallback
// uses, and is meant for Bind; packets posted to its port have no handler,
// and each is reported to the log as an error. It is never shut down.
func Default() *Pool {
	defaultPool.Lock()
	defer defaultPool.Unlock()
	if defaultPool.pl == nil {
		p, err := NewPort(0, FollowGOMAXPROCS(), WithName("default"))
		if err != nil {
			panic("iocp: the default port: " + err.Error())
		}
		pl, err := p.NewPool(0, unbound)
		if err != nil {
			panic("iocp: the default pool: " + err.Error())
		}
		defaultPool.pl = pl
	}
	return defaultPool.pl
}

// unbound is the default pool's handler: a packet there that no bound
// handle completed is a mistake, and it is reported.
func unbound(_ context.Context, pkt Packet) {
	log.Printf("iocp: a packet posted to the default pool's port has no handler (key %v)", pkt.Key)
}

// Bind binds source to the Default pool: Default().Bind(source, fn).
func Bind(source any, fn Handler) (*Handle, error) {
	return Default().Bind(source, fn)
}

func (pl *Pool) mustNotBeDefault(call string) {
	defaultPool.Lock()
	isDefault := pl == defaultPool.pl
	defaultPool.Unlock()
	if isDefault {
		panic("iocp: " + call + " of the Default pool")
	}
}
