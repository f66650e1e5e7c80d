package iocp

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
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
	port        *Port
	handler     Handler
	onError     func(error)
	n           int           // the workers it keeps: NewPool's n
	max         int           // the most it runs (WithMaxWorkers); n when fixed
	retireAfter time.Duration // how long a worker beyond n waits for a packet before it retires (WithIdleTimeout)

	ctx    context.Context // the handlers' context, without the worker
	cancel context.CancelFunc

	// Tasks of Go (task.go). With WithCancelOnError, scope holds the
	// tasks' context, which the batch's first error cancels and the Wait
	// that returns it replaces.
	tasks         sync.WaitGroup // Go's tasks not yet run or discarded
	cancelOnError bool           // read-only after NewPool
	scope         atomic.Pointer[taskScope]
	tmu           sync.Mutex // guards err, and the replacement of scope
	err           error      // the batch's first task error, until Wait returns it

	// pace is the Blocking budget (pace.go).
	pace pacer

	// Elastic workers (elastic.go): grow and retire. size and starting
	// change under mu; the fast checks load them without it.
	mu       sync.Mutex
	spare    []int        // indexes of retired workers, for the next to start; guarded by mu
	size     atomic.Int64 // workers now
	starting atomic.Int64 // workers started whose first Get has not returned
	grown    atomic.Uint64
	retired  atomic.Uint64

	// counters holds one per worker index, appended to under mu: see
	// Stats (stats.go).
	counters atomic.Pointer[[]*workerCounters]

	// Stall reports (WithStallReport, stall.go); read-only after NewPool.
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
// served by one pool alone: NewPool returns an error on a port that has a
// pool already, or workers of its own that are not closed, and NewWorker
// and Port.Get on a port with a pool panic. A worker of one's own would
// take packets that only the pool can run (Go, Call and Group's).
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
	if c.retireAfter == 0 {
		c.retireAfter = defaultRetireAfter
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
	pl := &Pool{port: p, handler: handler, onError: c.onError, n: n, max: c.max, retireAfter: c.retireAfter, done: make(chan struct{})}
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
	if c.cancelOnError {
		pl.cancelOnError = true
		pl.newScope()
	}
	pl.pace.budget.Store(int64(p.Concurrency()))
	// One pool a port, and no workers of one's own beside it: either
	// would take packets that only the pool knows how to run (tasks and
	// calls). The CAS comes before ownWorkers is read, and NewWorker's
	// count before its load of pool: of the two, one sees the other.
	if !p.pool.CompareAndSwap(nil, pl) {
		pl.cancel()
		return nil, fmt.Errorf("%w: port %s is served by a pool already", ErrInvalid, p.Name())
	}
	if n := p.ownWorkers.Load(); n != 0 {
		p.pool.Store(nil)
		pl.cancel()
		return nil, fmt.Errorf("%w: port %s has %d workers of its own, not closed; a pool serves a port alone", ErrInvalid, p.Name(), n)
	}
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

// Port returns the port the pool serves.
func (pl *Pool) Port() *Port { return pl.port }

// Workers returns the number of workers in the pool now: NewPool's n, and
// those it started since while its workers were blocked (see Pool).
func (pl *Pool) Workers() int { return int(pl.size.Load()) }

// A member is one worker goroutine's own state.
type member struct {
	i       int // its index: the "iocp.worker" label, and its counters
	c       *workerCounters
	fresh   bool // its first Get has not returned: counted in Pool.starting
	retired bool // it left by retire, which took it off size
	// The tasks' context with the worker (WithCancelOnError), and the
	// scope it was made for.
	tctx  context.Context
	scope *taskScope
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
	pl.labeled(i, func(ctx context.Context) { pl.loop(ctx, m) })
	returned = true
	if !m.retired {
		pl.size.Add(-1) // the port closed: Workers counts it no more, before Close returns
	}
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
	w := pl.port.newWorker()
	defer w.Close()
	w.c = m.c
	m.c.w.Store(w) // for the watcher (WithStallAsBlocked) and the pacer
	ctx = NewContext(ctx, w)
	m.scope = nil
	for {
		switch pl.next(ctx, w, m) {
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
func (pl *Pool) next(ctx context.Context, w *Worker, m *member) (step int) {
	var buf [1]Packet
	_, err := pl.get(w, m, buf[:])
	if m.fresh {
		m.fresh = false
		pl.arrived()
	}
	if err != nil {
		m.retired = err == errRetired
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
		switch k := pkt.Key.(type) {
		case task:
			pl.taskDone(pe)
		case job:
			k.end(pe)
		}
	}()
	if r := packetRegion(ctx); r != nil {
		defer r.End()
	}
	err = pl.dispatch(ctx, w, m, pkt)
	pl.end(c, start)
	if err != nil {
		c.add(&c.failed)
	}
	c.add(&c.handled)
	return stepServed
}

// dispatch calls the handler for pkt: the callback of the bound handle
// that pkt completes an operation of, the task or job it carries, or the
// pool's handler. ctx carries w and the pool's labels. It returns a task's
// or a job's error, and nil for the rest.
func (pl *Pool) dispatch(ctx context.Context, w *Worker, m *member, pkt Packet) error {
	switch k := pkt.Key.(type) {
	case *Handle:
		if k.callback != nil {
			k.callback(ctx, pkt)
			return nil
		}
	case job:
		return k.run(w, m.c)
	case task:
		err := k(pl.taskContext(ctx, w, m))
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
