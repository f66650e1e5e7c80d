package iocp

// Tasks: functions that a Pool runs as packets, with an errgroup's Wait.

import "context"

// task is a function that Pool.Go runs. It travels as a posted packet's
// Key: a func value is one pointer, so putting it in an interface
// allocates nothing.
type task func(context.Context) error

// taskScope is the context of one batch of tasks with WithCancelOnError:
// the batch's first error cancels it, with the error as its cause.
type taskScope struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// Go runs fn on one of the pool's workers, under the port's concurrency
// value as every packet is: it is posted to the port, FIFO with the rest,
// and a worker calls fn with a context that carries it (so that fn can
// mark its waits with Blocking) and that ends when the pool closes, or,
// with WithCancelOnError, when a task of the batch fails. Go returns
// ErrClosed, and does not count fn, once the pool shuts down, and
// ErrQueueFull on a full bounded port; a nil fn is an error that matches
// ErrInvalid.
//
// Go and Wait make one errgroup for the whole pool: for work of one
// caller among many, such as a request's, use a Group or Call, which keep
// their errors, limits and contexts to themselves. As with
// errgroup.Group, a call of Go that Wait must count has to happen before
// that Wait begins.
func (pl *Pool) Go(fn func(ctx context.Context) error) error {
	if fn == nil {
		return errNilFunc
	}
	pl.tasks.Add(1)
	if err := pl.port.Post(Packet{Key: task(fn)}); err != nil {
		pl.tasks.Done()
		return err
	}
	return nil
}

// Wait waits until every task started by Go has run, or was discarded by
// Close, and returns the first error among them: a task's own error, a
// *PanicError for a task that panicked or called runtime.Goexit, or
// ErrClosed for a task that Close discarded before it ran. Wait does not
// close the pool, and it ends the batch: the next Go starts a new one,
// with no error and, with WithCancelOnError, a new context.
func (pl *Pool) Wait() error {
	pl.tasks.Wait()
	pl.tmu.Lock()
	defer pl.tmu.Unlock()
	err := pl.err
	pl.err = nil
	if err != nil && pl.cancelOnError {
		pl.newScope()
	}
	return err
}

// newScope makes the context of the next batch of tasks, a child of the
// pool's; called by NewPool, and under tmu.
func (pl *Pool) newScope() {
	s := new(taskScope)
	s.ctx, s.cancel = context.WithCancelCause(pl.ctx)
	pl.scope.Store(s)
}

// taskContext returns the context a task gets on worker w: ctx (the
// pool's, with w and the labels), or with WithCancelOnError the batch's
// context with w, made once a worker and batch.
func (pl *Pool) taskContext(ctx context.Context, w *Worker, m *member) context.Context {
	if !pl.cancelOnError {
		return ctx
	}
	if s := pl.scope.Load(); s != m.scope {
		m.scope, m.tctx = s, NewContext(s.ctx, w)
	}
	return m.tctx
}

// taskDone ends a task with err. The first failure of a batch is kept for
// Wait, and, with WithCancelOnError, cancels the batch's context with err
// as its cause, as errgroup.WithContext does.
func (pl *Pool) taskDone(err error) {
	if err != nil {
		pl.tmu.Lock()
		if pl.err == nil {
			pl.err = err
			if pl.cancelOnError {
				pl.scope.Load().cancel(err)
			}
		}
		pl.tmu.Unlock()
	}
	pl.tasks.Done()
}

// dropped ends the task or job that pkt carries, if it carries one, for a
// packet that was discarded before it ran.
func (pl *Pool) dropped(pkt *Packet) {
	switch k := pkt.Key.(type) {
	case task:
		pl.taskDone(ErrClosed)
	case job:
		k.end(ErrClosed)
	}
}
