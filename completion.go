package iocp

// Completions: the packets a port delivers, and their settling: a Get
// that dequeues an operation's packet settles its Overlapped (see
// overlapped.go) before it returns.

// A Packet is one completion: what GetQueuedCompletionStatus returns.
// A Packet is a plain value; copying it copies the completion.
type Packet struct {
	Key        any         // the completion key: the handle's key, or what Post was given
	Bytes      int         // bytes transferred
	Overlapped *Overlapped // the operation this packet completes; may be nil for posted packets
	Err        error       // the operation's status; nil is success
}

// settleOne settles pkt's Overlapped, as settleAll does, and reports
// whether pkt completed an operation.
func (p *Port) settleOne(pkt *Packet) bool {
	return pkt.Overlapped != nil && p.associated.Load() && pkt.Overlapped.settle()
}

// settleAll settles the Overlapped of each packet in pkts, which a
// worker of p has just dequeued. On a port that has never had a handle no
// packet completes an operation, and the loop is skipped: Associate sets
// the flag before any operation can start, and the post of a completion
// is synchronized before the Get that runs this.
func (p *Port) settleAll(pkts []Packet) {
	if !p.associated.Load() {
		return
	}
	for i := range pkts {
		if ov := pkts[i].Overlapped; ov != nil {
			ov.settle()
		}
	}
}
