package iocp

// Per-request work on a shared pool: Call runs one function and hands its
// result back; a Group runs several and waits for them, as errgroup does.
//
// Both post a job to the pool's port: a packet whose Key is the job, FIFO
// with every other packet and under the concurrency value. A job runs
// exactly once or is ended without running (end), never both: its state
// moves once from queued, by a CAS, to running (a worker took it) or to
// withdrawn (its caller's context ended first, and the caller left).

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// A job is a function posted to a pool with a place for its outcome: a
// Call's caller or a Group. A pool's worker calls run for a packet whose
// Key is a job, or end if the packet is discarded (ErrClosed) or run
// panicked (a *PanicError). Exactly one of run's return and end happens.
type job interface {
	// run runs the job on w and returns its error. A job that does not
	// run because its caller's context had ended counts itself in c's
	// cancelled before its caller can see it end.
	run(w *Worker, c *workerCounters) error
	end(err error)
}

// A job's states.
const (
	jobQueued = iota
	jobRunning
	jobWithdrawn
)

// workerContext is the context a job's function receives: its caller's
// context, with the worker that runs it, so that Blocking(ctx, ...) finds
// that worker. It lives inside the job, so that giving it to the function
// allocates nothing. Its Done, Err and Deadline are the caller's; the
// context package sees through it to the caller's cancelCtx (Value
// answers for the other keys), so that a context derived from it starts
// no goroutine.
type workerContext struct {
	context.Context
	w *Worker // set by the worker before the function runs; read-only after
}

func (c *workerContext) Value(key any) any {
	if key == (workerKey{}) {
		return c.w
	}
	return c.Context.Value(key)
}

// signals recycles the channels that hand a Call's result back: one token,
// sent once by the worker after the result is stored, received once by the
// caller, which alone puts the channel back.
var signals = sync.Pool{New: func() any { return make(chan struct{}, 1) }}

// Call runs fn on one of pl's workers and returns its result: the
// per-request call of a service that shares one pool. fn receives a
// context that carries ctx's values, deadline and cancellation and also
// the worker that runs it, so that fn marks its waits with
// Blocking(ctx, ...) on that context (shadowing the caller's, as the
// signature invites).
//
// fn is posted to the pool's port, FIFO with the rest, waiting for room
// on a port with a queue limit. If ctx ends before a worker starts fn,
// Call returns ctx.Err() at once and fn never runs; once fn has started,
// Call waits for it to return, however ctx ends (fn sees ctx end). A
// panic in fn is recovered by the pool and returned as a *PanicError.
// Call returns ErrClosed if the pool is closed, or closes before fn
// starts. A nil ctx, pl or fn panics. fn's context is the caller's, not
// the pool's: Close waits for a running fn, as for any handler, and does
// not cancel it.
//
// Call makes one allocation, its job, beside what ctx.Done may make the
// first time. The return of fn is synchronized before the return of Call.
func Call[T any](ctx context.Context, pl *Pool, fn func(ctx context.Context) (T, error)) (T, error) {
	mustContext(ctx)
	if pl == nil {
		panic("iocp: Call on a nil Pool")
	}
	if fn == nil {
		panic("iocp: Call with a nil function")
	}
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	j := &callJob[T]{fn: fn}
	j.ctx.Context = ctx
	j.done = signals.Get().(chan struct{})
	if err := pl.port.postWait(ctx, &Packet{Key: job(j)}, refusePost); err != nil {
		signals.Put(j.done)
		return zero, err
	}
	select {
	case <-j.done:
	case <-ctx.Done(): // nil, and never ready, for a context that cannot end
		if j.state.CompareAndSwap(jobQueued, jobWithdrawn) {
			// The worker that takes the packet finds it withdrawn and
			// sends nothing: the channel is the caller's again.
			signals.Put(j.done)
			return zero, ctx.Err()
		}
		<-j.done // started: fn sees ctx end, and returns
	}
	// The receive synchronizes with the worker's send, which follows its
	// stores of res and err.
	signals.Put(j.done)
	return j.res, j.err
}

// callJob is one Call: its function, its context and its result.
type callJob[T any] struct {
	ctx   workerContext
	fn    func(context.Context) (T, error)
	state atomic.Int32
	done  chan struct{} // the caller's signal; the worker sends once
	res   T
	err   error
}

func (j *callJob[T]) run(w *Worker, c *workerCounters) error {
	if !j.state.CompareAndSwap(jobQueued, jobRunning) {
		c.add(&c.cancelled) // withdrawn: the caller has returned
		return nil
	}
	if err := j.ctx.Err(); err != nil {
		c.add(&c.cancelled)
		j.err = err
		j.done <- struct{}{}
		return nil
	}
	j.ctx.w = w
	j.res, j.err = j.fn(&j.ctx)
	err := j.err
	j.done <- struct{}{} // hands res and err over; j is the caller's from here
	return err
}

func (j *callJob[T]) end(err error) {
	if j.state.Load() == jobRunning || j.state.CompareAndSwap(jobQueued, jobRunning) {
		j.err = err
		j.done <- struct{}{}
	}
}

// A Group runs functions on a pool for one caller and waits for them, as
// errgroup.Group does with goroutines: the fan-out of one request on a
// pool that many requests share. Pool.Group makes one, with the context
// its functions receive.
//
// A Group is for one caller: its errors, its limit and its context are its
// own, whatever else runs on the pool. Its context is derived from the
// caller's and is cancelled, with the error as its cause
// (context.Cause), by the first function that fails, and when Wait
// returns. A function whose caller's context ended before a worker
// started it does not run: it counts as failed with that context's error.
//
// The zero Group is not usable, and a Group must not be copied. Go,
// TryGo and Wait may be called from any goroutine; SetLimit and
// JoinErrors, before the first Go. Each call of Go or TryGo that returns
// true is synchronized before the return of the Wait that waits for it,
// as is its function's return.
type Group struct {
	pl     *Pool
	parent context.Context // the caller's: a function not started when it ends does not run
	ctx    context.Context // parent's child, the functions' context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
	sem    chan struct{} // a token a function in flight, with a limit (SetLimit)

	mu   sync.Mutex // guards err, errs and join
	err  error      // the first error
	errs []error    // every error, with JoinErrors
	join bool
}

// Group returns a new Group on pl for a caller whose context is ctx, and
// the context its functions receive (with their worker added), which is
// cancelled on the group's first error and when Wait returns. A nil ctx
// panics.
func (pl *Pool) Group(ctx context.Context) (*Group, context.Context) {
	mustContext(ctx)
	g := &Group{pl: pl, parent: ctx}
	g.ctx, g.cancel = context.WithCancelCause(ctx)
	return g, g.ctx
}

// SetLimit bounds the group's functions in flight, from Go to their return
// (queued, running and blocked alike), to n: the limit that protects a
// downstream service, as errgroup.Group.SetLimit. Go then waits for room,
// and TryGo fails without it. A negative n removes the limit; 0 is an
// error. SetLimit panics if a function is in flight.
func (g *Group) SetLimit(n int) {
	if n == 0 {
		panic("iocp: Group.SetLimit(0)")
	}
	if len(g.sem) != 0 {
		panic("iocp: Group.SetLimit while functions are in flight")
	}
	if n < 0 {
		g.sem = nil
		return
	}
	g.sem = make(chan struct{}, n)
}

// JoinErrors makes Wait return every function's error, joined with
// errors.Join in the order they failed, instead of the first one. The
// first error still cancels the group's context.
func (g *Group) JoinErrors() {
	g.mu.Lock()
	g.join = true
	g.mu.Unlock()
}

// Go runs fn on the pool with the group's context. With a limit it waits
// for room first (SetLimit), and on a port with a queue limit it waits
// for room in the queue: it never fails for lack of room. If the caller's
// context ends while Go waits, or before a worker starts fn, fn does not
// run and the group records the context's error; if the pool is closed,
// it records ErrClosed. A panic in fn is recovered by the pool and
// recorded as a *PanicError. A nil fn panics.
func (g *Group) Go(fn func(ctx context.Context) error) {
	if fn == nil {
		panic("iocp: Group.Go with a nil function")
	}
	if g.sem != nil {
		select {
		case g.sem <- struct{}{}:
		default:
			select {
			case g.sem <- struct{}{}:
			case <-g.parent.Done():
				g.fail(g.parent.Err())
				return
			}
		}
	}
	g.start(fn, true)
}

// TryGo is Go that does not wait: it returns false, and fn does not run,
// if the group is at its limit or the port's queue is full.
func (g *Group) TryGo(fn func(ctx context.Context) error) bool {
	if fn == nil {
		panic("iocp: Group.TryGo with a nil function")
	}
	if g.sem != nil {
		select {
		case g.sem <- struct{}{}:
		default:
			return false
		}
	}
	return g.start(fn, false)
}

// start posts fn, holding a token of the limit if there is one, and
// reports false if the queue was full and wait is false.
func (g *Group) start(fn func(context.Context) error, wait bool) bool {
	t := &groupJob{g: g, fn: fn}
	t.ctx.Context = g.ctx
	g.wg.Add(1)
	var err error
	if wait {
		err = g.pl.port.postWait(g.parent, &Packet{Key: job(t)}, refusePost)
	} else if err = g.pl.port.post(&Packet{Key: job(t)}, refusePost); err == ErrQueueFull {
		g.returnToken()
		g.wg.Done()
		return false
	}
	if err != nil {
		g.done(err)
	}
	return true
}

// Wait waits until every function that Go and TryGo started has returned
// or was ended without running, cancels the group's context, and returns
// the first error among them (every error, with JoinErrors), or nil.
func (g *Group) Wait() error {
	g.wg.Wait()
	g.mu.Lock()
	err := g.err
	if g.join {
		err = errors.Join(g.errs...)
	}
	g.mu.Unlock()
	g.cancel(err)
	return err
}

// fail records err, a function's failure; the first one cancels the
// group's context with err as its cause.
func (g *Group) fail(err error) {
	g.mu.Lock()
	first := g.err == nil
	if first {
		g.err = err
	}
	if g.join {
		g.errs = append(g.errs, err)
	}
	g.mu.Unlock()
	if first {
		g.cancel(err)
	}
}

// done ends a function that was started, with its error.
func (g *Group) done(err error) {
	if err != nil {
		g.fail(err)
	}
	g.returnToken()
	g.wg.Done()
}

// returnToken gives back the token of the limit that start took, if the
// group has a limit.
func (g *Group) returnToken() {
	if g.sem != nil {
		<-g.sem
	}
}

// groupJob is one function of a Group.
type groupJob struct {
	ctx workerContext // the group's context, with the worker
	g   *Group
	fn  func(context.Context) error
}

func (t *groupJob) run(w *Worker, c *workerCounters) error {
	if err := t.g.parent.Err(); err != nil {
		c.add(&c.cancelled)
		t.g.done(err)
		return nil
	}
	t.ctx.w = w
	err := t.fn(&t.ctx)
	t.g.done(err)
	return err
}

// end is called for a function that was discarded before it ran, or that
// panicked: run has not returned, so done has not been called.
func (t *groupJob) end(err error) { t.g.done(err) }
