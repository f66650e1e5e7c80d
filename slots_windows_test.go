package iocp

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestSlotTable(t *testing.T) {
	var st slotTable
	a := st.put(&Packet{Key: "a"})
	b := st.put(&Packet{Key: "b"})
	assert.NotZero(t, a, "0 is never a slot")
	assert.NotEqual(t, a, b)
	assert.Equal(t, Packet{Key: "a"}, st.take(a))
	c := st.put(&Packet{Key: "c"})
	assert.Equal(t, a, c, "a freed slot is reused")
	assert.Equal(t, Packet{Key: "b"}, st.take(b))
	assert.Equal(t, Packet{Key: "c"}, st.take(c))
	assert.Len(t, st.pkts, 2, "the table is as large as the most packets at once")
	requirePanic(t, func() { st.take(0) })
	requirePanic(t, func() { st.take(99) })
}
