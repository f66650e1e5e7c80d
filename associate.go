package iocp

// Association: the registry of sources, what a source can do, and how
// its operations are interrupted.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"reflect"
	"slices"
	"sync"
	"time"
	"unsafe"
)

// aLongTimeAgo is a deadline that has passed: setting it makes a pending
// call on a net source return at once.
var aLongTimeAgo = time.Unix(1, 0)

// sources registers every associated source, so that a source belongs to
// one port at most (SPEC S41).
var sources struct {
	sync.Mutex
	m map[any]*Handle
}

// funcID identifies a func value: Go funcs are not comparable, but a func
// value is a pointer to its closure, which is what makes two func values
// the same function.
type funcID struct{ p unsafe.Pointer }

// sourceID returns the key under which src is registered, or nil for a
// value that has no identity: one that is not comparable (a struct holding
// a slice, say), of which every copy is a different source.
func sourceID(src any) any {
	if f := asFunc(src); f != nil {
		return funcID{*(*unsafe.Pointer)(unsafe.Pointer(&f))}
	}
	if !reflect.TypeOf(src).Comparable() {
		return nil
	}
	return src
}

// errUnhashable is Associate's answer to a source whose type is
// comparable but whose value is not: an interface field in it holds a
// slice, a map or a func, and using it as a map key would panic.
func errUnhashable(src any) error {
	return fmt.Errorf("%w: a %T source holding a value that cannot be compared", ErrInvalid, src)
}

// Associate associates source with the port: the operations started on the
// returned Handle complete on the port, each with one packet that carries
// key (SPEC S40-S42). It is CreateIoCompletionPort with a file handle.
//
// source may be a net.Conn, net.Listener, net.PacketConn, *os.File, any
// io.Reader, io.Writer, io.ReaderAt or io.WriterAt, or a Func. The
// operations a Handle allows are the ones its source's type has. A source
// is associated with one port at most, until its Handle is closed: a
// second Associate returns ErrAssociated. A nil source is an error that
// matches ErrInvalid; a source of any other type, an error that matches
// errors.ErrUnsupported.
//
// Associate returns ErrClosed on a closed port, and once a pool that is
// closing has closed the port's handles; a draining port accepts it.
func (p *Port) Associate(source any, key any) (*Handle, error) {
	return p.associate(source, key, nil)
}

// associate is Associate; with a callback (Pool.Bind) the handle is its
// own key.
func (p *Port) associate(source any, key any, callback Handler) (*Handle, error) {
	if source == nil {
		return nil, fmt.Errorf("%w: nil source", ErrInvalid)
	}
	if v := reflect.ValueOf(source); isNilable(v.Kind()) && v.IsNil() {
		return nil, fmt.Errorf("%w: nil %T source", ErrInvalid, source)
	}
	h := &Handle{p: p, key: key, src: source, callback: callback}
	if callback != nil {
		h.key = h
	}
	if !h.bind(source) {
		return nil, fmt.Errorf("iocp: cannot associate a %T: %w", source, errors.ErrUnsupported)
	}
	h.id = sourceID(source)
	if h.id != nil && !reflect.ValueOf(h.id).Comparable() {
		return nil, errUnhashable(source)
	}
	if err := p.register(h); err != nil {
		return nil, err
	}
	h.setInterrupts(source)
	return h, nil
}

// register enters h in the registry of sources and in p's handles, or
// returns why it cannot be.
func (p *Port) register(h *Handle) error {
	sources.Lock()
	defer sources.Unlock()
	if h.id != nil && sources.m[h.id] != nil {
		return fmt.Errorf("%w: %T", ErrAssociated, h.src)
	}
	p.hmu.Lock()
	if p.handlesClosed || p.gate.Load()&closedBit != 0 {
		p.hmu.Unlock()
		return ErrClosed
	}
	if p.handles == nil {
		p.handles = make(map[*Handle]struct{})
		p.associated.Store(true)
	}
	p.handles[h] = struct{}{}
	p.hmu.Unlock()
	if h.id != nil {
		if sources.m == nil {
			sources.m = make(map[any]*Handle)
		}
		sources.m[h.id] = h
	}
	return nil
}

// asFunc returns src as a Func if it is one, of the named type or of the
// unnamed func type a literal has, and nil otherwise.
func asFunc(src any) Func {
	switch f := src.(type) {
	case Func:
		return f
	case func(context.Context, *Overlapped) (int, error):
		return f
	}
	return nil
}

func isNilable(k reflect.Kind) bool {
	switch k {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan, reflect.Interface:
		return true
	}
	return false
}

// deadliner is what *os.File, net.Conn and net.PacketConn have.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// bind records the interfaces src has, and reports whether it has one
// that makes an operation.
func (h *Handle) bind(src any) bool {
	h.fn = asFunc(src)
	h.r, _ = src.(io.Reader)
	h.w, _ = src.(io.Writer)
	h.ra, _ = src.(io.ReaderAt)
	h.wa, _ = src.(io.WriterAt)
	h.ln, _ = src.(net.Listener)
	h.pc, _ = src.(net.PacketConn)
	h.raw = newRawWriter(src)
	return h.fn != nil || h.r != nil || h.w != nil || h.ra != nil || h.wa != nil || h.ln != nil || h.pc != nil
}

// setInterrupts finds how operations on src can be interrupted: by the
// deadlines of net sources and of files that can be polled. A source
// with the methods may still refuse deadlines (a regular file; os.Pipe's
// ends on Windows, which cannot be polled): clearing them tells, and such
// a source cannot be interrupted. It runs once the source is registered
// to h, so that it never touches the deadlines of a source that another
// handle owns.
func (h *Handle) setInterrupts(src any) {
	if d, ok := src.(deadliner); ok {
		if d.SetReadDeadline(time.Time{}) == nil {
			h.interrupt[laneRead] = func(now bool) error { return d.SetReadDeadline(deadline(now)) }
		}
		if d.SetWriteDeadline(time.Time{}) == nil {
			h.interrupt[laneWrite] = func(now bool) error { return d.SetWriteDeadline(deadline(now)) }
		}
	} else if d, ok := src.(interface{ SetDeadline(time.Time) error }); ok && h.ln != nil {
		// A listener has one deadline, for Accept, in the read lane.
		if d.SetDeadline(time.Time{}) == nil {
			h.interrupt[laneRead] = func(now bool) error { return d.SetDeadline(deadline(now)) }
		}
	}
}

func deadline(now bool) time.Time {
	if now {
		return aLongTimeAgo
	}
	return time.Time{}
}

// closeHandles closes every handle of a port that is closing, and
// refuses Associate from here on: a handle that register adds after the
// snapshot would escape it.
func (p *Port) closeHandles() {
	for _, h := range p.handleList(true) {
		h.Close()
	}
}

// handleList returns the port's handles, read under hmu: a concurrent
// Associate may be making the set, and each Close takes hmu itself to
// leave it. With closing, Associate is refused from then on.
func (p *Port) handleList(closing bool) []*Handle {
	p.hmu.Lock()
	defer p.hmu.Unlock()
	if closing {
		p.handlesClosed = true
	}
	return slices.Collect(maps.Keys(p.handles))
}
