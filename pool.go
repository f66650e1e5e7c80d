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
	n       int

	ctx    context.Context // the handlers' context, without the worker
	cancel context.CancelFunc

	// Tasks (task.go). taskCtx is ctx, or a child of it that the first
	// error cancels (WithCancelOnError).
	tasks      sync.WaitGroup // Go's tasks not yet run or discarded
	taskCtx    context.Context
	taskCancel context.CancelFunc // nil without WithCancelOnError
	errOnce    sync.Once
	err        error // the first task error; written once, under errOnce

	counters []workerCounters // one per worker index; see Stats

	// Stall reports (WithStallReport); read-only after NewPool.
	stallLimit time.Duration
	onStall    func(Stall)
	epoch      time.Time     // what workerCounters.started counts from
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
	stallLimit    time.Duration
	onStall       func(Stall)
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
// handler. n == 0 means twice the port's concurrency value at this moment;
// n does not change afterwards. n < 0 or n > 1<<20 (from NewPool(0) too),
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
	if refusing(p.gate.Load()) {
		return nil, ErrClosed
	}
	pl := &Pool{port: p, handler: handler, onError: c.onError, n: n, done: make(chan struct{})}
	pl.counters = make([]workerCounters, n)
	pl.stallLimit, pl.onStall, pl.epoch = c.stallLimit, c.onStall, time.Now()
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
		go pl.serve(i)
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

// Workers returns the number of workers in the pool.
func (pl *Pool) Workers() int { return pl.n }

// serve is the goroutine of worker i: it runs with the pool's pprof labels
// until the port closes. A handler that calls runtime.Goexit ends the
// goroutine whatever serve does (next reports it): a new goroutine then
// takes worker i's place, so that the pool keeps its size.
func (pl *Pool) serve(i int) {
	returned := false
	defer func() {
		if !returned {
			go pl.serve(i) // runtime.Goexit: panics are recovered per packet
			return
		}
		pl.exit()
	}()
	labels := pprof.Labels("iocp.port", pl.port.Name(), "iocp.worker", strconv.Itoa(i))
	pprof.Do(pl.ctx, labels, func(ctx context.Context) { pl.loop(ctx, &pl.counters[i]) })
	returned = true
}

// loop runs one of the pool's workers until the port closes. A handler that
// panics leaves its worker in whatever state it was in (running, or
// blocked by a Block without its Unblock): the worker is closed, which
// frees its slot, and a new one takes its place.
func (pl *Pool) loop(ctx context.Context, c *workerCounters) {
	for pl.port.gate.Load()&closedBit == 0 {
		pl.work(ctx, c)
	}
}

// work serves the port with one Worker until the port closes or a handler
// panics.
func (pl *Pool) work(ctx context.Context, c *workerCounters) {
	w := pl.port.NewWorker()
	defer w.Close()
	ctx = NewContext(ctx, w)
	tctx := ctx // the tasks' context, with the worker and the pool's labels
	if pl.taskCancel != nil {
		tctx = NewContext(pl.taskCtx, w) // without the pprof labels' context values
	}
	for pl.next(ctx, tctx, w, c) {
	}
}

// next takes one packet and handles it. It reports false when the worker
// must go: the port is closed, or the handler panicked.
func (pl *Pool) next(ctx, tctx context.Context, w *Worker, c *workerCounters) (ok bool) {
	// The port's Close ends the Get (ErrClosed): it needs no context.
	var buf [1]Packet
	if _, err := w.get(context.Background(), buf[:], true); err != nil {
		return false
	}
	pkt := buf[0]
	if !pl.port.settleOne(&pkt) && pl.discard.Load() {
		pl.port.discarded.Add(1) // posted, and Close came first
		pl.dropped(&pkt)
		return true
	}
	defer func() {
		if ok {
			return
		}
		// A nil recover here is runtime.Goexit (panic(nil) recovers a
		// *runtime.PanicNilError): the goroutine is ending, work's
		// deferred Close still runs, and serve starts its successor.
		r := recover()
		if r == nil {
			r = ErrGoexit
		}
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
	if pl.onStall != nil {
		c.started.Store(int64(time.Since(pl.epoch)) | 1) // never 0, which says idle
		defer c.started.Store(0)
	}
	if err := pl.dispatch(ctx, tctx, pkt); err != nil {
		c.add(&c.failed)
	}
	c.add(&c.handled)
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
		for i := range pl.counters {
			c := &pl.counters[i]
			s := c.started.Load()
			if s == 0 || time.Duration(now-s) <= pl.stallLimit || c.reported == s {
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
	// from Pool.epoch, with its low bit set; 0 when none runs. Kept only
	// with WithStallReport.
	started  atomic.Int64
	reported int64 // the started value last reported; the watcher's own
	_        [cacheLine - 40]byte
}

// add counts one on a counter that only the calling worker writes.
func (c *workerCounters) add(n *atomic.Uint64) { n.Store(n.Load() + 1) }

// PoolStats is a snapshot of a pool's counters, summed over its workers
// one after another; see Port.Stats for the port's.
type PoolStats struct {
	Workers  int    // the pool's workers
	Handled  uint64 // packets, completions and tasks handled, panics included
	Panicked uint64 // of those, the handlers and tasks that panicked or called runtime.Goexit
	Failed   uint64 // tasks of Go that returned an error
	// Stalled counts the handlers running now for longer than the limit
	// of WithStallReport; 0 without it.
	Stalled int
}

// Stats returns the pool's counters.
func (pl *Pool) Stats() PoolStats {
	s := PoolStats{Workers: pl.n}
	now := int64(time.Since(pl.epoch))
	for i := range pl.counters {
		c := &pl.counters[i]
		if st := c.started.Load(); pl.onStall != nil && st != 0 && time.Duration(now-st) > pl.stallLimit {
			s.Stalled++
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
