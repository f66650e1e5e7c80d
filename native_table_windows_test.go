package iocp

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPacketTable(t *testing.T) {
	var pt packetTable
	put := func(key string, limit int) uintptr {
		t.Helper()
		s, ok := pt.put(&Packet{Key: key}, limit)
		require.True(t, ok, "room for %s", key)
		return s
	}
	a := put("a", 0)
	b := put("b", 2)
	assert.NotZero(t, a, "0 is never an entry")
	assert.NotEqual(t, a, b)
	_, ok := pt.put(&Packet{Key: "over"}, 2)
	assert.False(t, ok, "a limit of 2 with 2 in the table")
	assert.Equal(t, 2, pt.len())
	assert.Equal(t, Packet{Key: "a"}, pt.take(a))
	c := put("c", 2)
	assert.Equal(t, a, c, "a vacated entry is reused")
	assert.Equal(t, Packet{Key: "b"}, pt.take(b))
	assert.Equal(t, Packet{Key: "c"}, pt.take(c))
	assert.Len(t, pt.pkts, 2, "the table is as large as the most packets at once")
	assert.Zero(t, pt.len())
	requirePanic(t, func() { pt.take(0) })
	requirePanic(t, func() { pt.take(99) })

	put("d", 0)
	var drained []any
	assert.Equal(t, 1, pt.drain(func(p *Packet) { drained = append(drained, p.Key) }))
	assert.Equal(t, []any{"d"}, drained)
}
