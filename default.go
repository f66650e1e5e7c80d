package iocp

// The Default pool, the counterpart of the system thread pool.

import (
	"context"
	"log"
	"sync"
)

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
