package iocp

// Tasks: functions that a Pool runs as packets, with an errgroup's Wait.

import "context"

// task is a function that Pool.Go runs. It travels as a posted packet's
// Key: a func value is one pointer, so putting it in an interface
// allocates nothing.
type task func(context.Context) error

// Go runs fn on one of the pool's workers, under the port's concurrency
// value as every packet is: it is posted to the port, FIFO with the rest,
// and a worker calls fn with a context that carries it (so that fn can
// mark its waits with Blocking) and that ends when the pool closes, or,
// with WithCancelOnError, when a task fails. Go returns ErrClosed, and
// does not count fn, once the pool shuts down, and ErrQueueFull on a full
// bounded port; a nil fn is an error that matches ErrInvalid.
//
// As with errgroup.Group, a call of Go that Wait must count has to happen
// before that Wait begins.
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
// close the pool: Go may be called again afterwards.
func (pl *Pool) Wait() error {
	pl.tasks.Wait()
	return pl.err
}

// taskDone ends a task with err, which the first failure keeps.
func (pl *Pool) taskDone(err error) {
	if err != nil {
		pl.errOnce.Do(func() {
			pl.err = err
			if pl.taskCancel != nil {
				pl.taskCancel()
			}
		})
	}
	pl.tasks.Done()
}

// dropped ends the task that pkt carries, if it carries one, for a packet
// that was discarded before it ran.
func (pl *Pool) dropped(pkt *Packet) {
	if _, ok := pkt.Key.(task); ok {
		pl.taskDone(ErrClosed)
	}
}
