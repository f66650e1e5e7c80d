package iocp

// The stall watcher (WithStallReport, WithStallAsBlocked): a goroutine
// that looks at each worker's handler every quarter of the limit.

import "time"

// A Stall reports a handler, callback or task that has run longer than
// the limit given to WithStallReport: the worker it runs on, which is that
// goroutine's "iocp.worker" pprof label, and how long it has run so far.
type Stall struct {
	Worker  int
	Running time.Duration
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
