package iocp

import "sync"

// packetTable keeps the packets that are in a kernel's queue (the native
// backend): the kernel carries only integers, so a posted packet
// stays here, and the completion key the kernel carries is its entry's
// number. No Go pointer passes through the kernel.
//
// Entry numbers start at 1, so that a key of 0 is never an entry. Vacated
// entries are reused last in, first out, so the table stays as large as
// the most packets queued at once.
//
// TODO(issue 4): the mutex is taken once by each post and each take; shard
// it or make the vacant list lock-free before the native backend carries
// traffic on many cores.
type packetTable struct {
	mu     sync.Mutex
	pkts   []Packet // guarded by mu; pkts[i] is entry i+1
	vacant []uint32 // guarded by mu; numbers of vacant entries
}

// put stores pkt and returns its entry number, unless limit > 0 and the
// table holds limit packets already.
func (t *packetTable) put(pkt *Packet, limit int) (uintptr, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if limit > 0 && len(t.pkts)-len(t.vacant) >= limit {
		return 0, false
	}
	if n := len(t.vacant); n > 0 {
		e := t.vacant[n-1]
		t.vacant = t.vacant[:n-1]
		t.pkts[e-1] = *pkt
		return uintptr(e), true
	}
	t.pkts = append(t.pkts, *pkt)
	return uintptr(len(t.pkts)), true
}

// len returns the number of packets in the table.
func (t *packetTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pkts) - len(t.vacant)
}

// take removes and returns the packet in entry e, which put returned and
// no take has taken since.
func (t *packetTable) take(e uintptr) Packet {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e == 0 || e > uintptr(len(t.pkts)) {
		panic("iocp: completion key is not an entry of this port")
	}
	pkt := t.pkts[e-1]
	t.pkts[e-1] = Packet{}
	t.vacant = append(t.vacant, uint32(e))
	return pkt
}

// drain empties the table, calling fn for each packet in it, and returns
// how many there were.
func (t *packetTable) drain(fn func(*Packet)) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	vacant := make([]bool, len(t.pkts))
	for _, e := range t.vacant {
		vacant[e-1] = true
	}
	for i := range t.pkts {
		if !vacant[i] {
			fn(&t.pkts[i])
		}
	}
	n := len(t.pkts) - len(t.vacant)
	t.pkts, t.vacant = nil, nil
	return n
}
