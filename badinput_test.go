package iocp

import (
	"context"
	"errors"
	"io"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNilContext: every call that takes a context panics on a nil one
// before it changes anything, whether or not a packet is queued. The
// port is unharmed: a port of concurrency 1 still delivers to the next
// worker, and nothing is lost.
func TestNilContext(t *testing.T) {
	var nilCtx context.Context // a nil interface, as a caller's mistake makes it
	calls := map[string]func(p *Port){
		"Worker.Get":      func(p *Port) { p.NewWorker().Get(nilCtx) },
		"Worker.GetBatch": func(p *Port) { p.NewWorker().GetBatch(nilCtx, make([]Packet, 2)) },
		"Port.Get":        func(p *Port) { p.Get(nilCtx) },
		"Port.Shutdown":   func(p *Port) { p.Shutdown(nilCtx) },
	}
	for name, call := range calls {
		for _, queued := range []bool{false, true} {
			p := newPort(t, 1)
			if queued {
				post(t, p, "queued")
			}
			requirePanic(t, func() { call(p) })
			st := p.Stats()
			assert.Equal(t, 0, st.Running, "%s: no slot taken", name)
			assert.Equal(t, 0, st.Waiting, "%s: no waiter left", name)
			assert.Equal(t, btoi(queued), st.Queued, "%s: nothing taken", name)
			require.NoError(t, p.Post(Packet{Key: "next"}), name)
			w := p.NewWorker()
			if queued {
				pkt, ok := w.TryGet()
				require.True(t, ok, name)
				assert.Equal(t, "queued", pkt.Key, name)
			}
			pkt, ok := w.TryGet()
			require.True(t, ok, "%s: the port still delivers", name)
			assert.Equal(t, "next", pkt.Key, name)
			w.Close()
		}
	}
	p := newPort(t, 1)
	pl := newPool(t, p, 1, func(context.Context, Packet) {})
	requirePanic(t, func() { pl.Shutdown(nilCtx) })
}

func TestGetBatchEmptyDst(t *testing.T) {
	p := newPort(t, 1)
	_, err := p.NewWorker().GetBatch(context.Background(), nil)
	assert.ErrorIs(t, err, ErrInvalid)
}

// TestAssociateUnhashable: a source of a comparable type whose value
// cannot be compared (an interface field holding a slice) is refused with
// an error, not a panic from the registry's map.
func TestAssociateUnhashable(t *testing.T) {
	p := newPort(t, 1)
	_, err := p.Associate(taggedReader{[]int{1}}, "bad")
	assert.ErrorIs(t, err, ErrInvalid)
	h, err := p.Associate(taggedReader{"ok"}, "good")
	require.NoError(t, err, "the same type with a comparable value")
	require.NoError(t, h.Close())
}

// taggedReader is a comparable type that may hold a value that is not.
type taggedReader struct{ tag any }

func (taggedReader) Read([]byte) (int, error) { return 0, io.EOF }

// TestPoolGoexit: a handler that calls runtime.Goexit is reported as a
// panic is, and its worker is replaced: the pool keeps serving with all
// its workers, and Shutdown does not wait for its deadline.
func TestPoolGoexit(t *testing.T) {
	p := newPort(t, 2)
	errs := make(chan error, 8)
	done := make(chan any, 8)
	pl := newPool(t, p, 2, func(_ context.Context, pkt Packet) {
		if pkt.Key == "goexit" {
			runtime.Goexit()
		}
		done <- pkt.Key
	}, errorsTo(errs))
	post(t, p, "goexit", "goexit", "goexit")
	for range 3 {
		err := recv(t, errs)
		var pe *PanicError
		require.True(t, errors.As(err, &pe), "got %v", err)
		assert.Equal(t, "goexit", pe.Packet.Key)
		assert.ErrorIs(t, err, ErrGoexit)
	}
	post(t, p, "a", "b")
	got := []any{recv(t, done), recv(t, done)}
	assert.ElementsMatch(t, []any{"a", "b"}, got, "both workers still serve")
	require.NoError(t, pl.Shutdown(context.Background()))
	assert.Zero(t, p.Stats().Running)
}

// TestHandleString: a handle prints its source's type and key, and a
// bound one, whose key is itself, prints readably in a PanicError.
func TestHandleString(t *testing.T) {
	p := newPort(t, 1)
	h := associate(t, p, taggedReader{"x"}, 7)
	assert.Equal(t, "iocp.Handle(iocp.taggedReader, key 7)", h.String())

	errs := make(chan error, 1)
	pl := newPool(t, p, 1, func(context.Context, Packet) {}, errorsTo(errs))
	bh, err := pl.Bind(taggedReader{"y"}, func(context.Context, Packet) { panic("boom") })
	require.NoError(t, err)
	require.NoError(t, bh.Read(&Overlapped{}, make([]byte, 1)))
	got := recv(t, errs).Error()
	assert.Equal(t, "iocp: handler panic: boom (packet key iocp.Handle(iocp.taggedReader, bound))", got)
}
