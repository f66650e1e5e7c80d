package iocp

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSlotTable(t *testing.T) {
	var st slotTable
	put := func(key string, limit int) uintptr {
		t.Helper()
		s, ok := st.put(&Packet{Key: key}, limit)
		require.True(t, ok, "room for %s", key)
		return s
	}
	a := put("a", 0)
	b := put("b", 2)
	assert.NotZero(t, a, "0 is never a slot")
	assert.NotEqual(t, a, b)
	_, ok := st.put(&Packet{Key: "over"}, 2)
	assert.False(t, ok, "a limit of 2 with 2 in the table")
	assert.Equal(t, 2, st.len())
	assert.Equal(t, Packet{Key: "a"}, st.take(a))
	c := put("c", 2)
	assert.Equal(t, a, c, "a freed slot is reused")
	assert.Equal(t, Packet{Key: "b"}, st.take(b))
	assert.Equal(t, Packet{Key: "c"}, st.take(c))
	assert.Len(t, st.pkts, 2, "the table is as large as the most packets at once")
	assert.Zero(t, st.len())
	requirePanic(t, func() { st.take(0) })
	requirePanic(t, func() { st.take(99) })

	put("d", 0)
	var drained []any
	assert.Equal(t, 1, st.drain(func(p *Packet) { drained = append(drained, p.Key) }))
	assert.Equal(t, []any{"d"}, drained)
}
