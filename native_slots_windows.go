package iocp

import "sync"

// slotTable keeps the packets that are in a kernel's queue (the native
// backend): the kernel carries only integers, so a posted packet
// stays here, and the completion key the kernel carries is its slot's
// number. No Go pointer passes through the kernel.
//
// Slot numbers start at 1, so that a key of 0 is never a slot. Freed slots
// are reused last in, first out, so the table stays as large as the most
// packets queued at once.
//
// TODO(issue 4): the mutex is taken once by each post and each take; shard
// it or make the free list lock-free before the native backend carries
// traffic on many cores.
type slotTable struct {
	mu   sync.Mutex
	pkts []Packet // guarded by mu; pkts[i] is slot i+1
	free []uint32 // guarded by mu; numbers of free slots
}

// put stores pkt and returns its slot number, unless limit > 0 and the
// table holds limit packets already.
func (t *slotTable) put(pkt *Packet, limit int) (uintptr, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if limit > 0 && len(t.pkts)-len(t.free) >= limit {
		return 0, false
	}
	if n := len(t.free); n > 0 {
		s := t.free[n-1]
		t.free = t.free[:n-1]
		t.pkts[s-1] = *pkt
		return uintptr(s), true
	}
	t.pkts = append(t.pkts, *pkt)
	return uintptr(len(t.pkts)), true
}

// len returns the number of packets in the table.
func (t *slotTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pkts) - len(t.free)
}

// take removes and returns the packet in slot s, which put returned and
// no take has taken since.
func (t *slotTable) take(s uintptr) Packet {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s == 0 || s > uintptr(len(t.pkts)) {
		panic("iocp: completion key is not a slot of this port")
	}
	pkt := t.pkts[s-1]
	t.pkts[s-1] = Packet{}
	t.free = append(t.free, uint32(s))
	return pkt
}

// drain empties the table, calling fn for each packet in it, and returns
// how many there were.
func (t *slotTable) drain(fn func(*Packet)) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	free := make([]bool, len(t.pkts))
	for _, s := range t.free {
		free[s-1] = true
	}
	for i := range t.pkts {
		if !free[i] {
			fn(&t.pkts[i])
		}
	}
	n := len(t.pkts) - len(t.free)
	t.pkts, t.free = nil, nil
	return n
}
