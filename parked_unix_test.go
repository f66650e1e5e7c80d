//go:build unix

package iocp

import (
	"context"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cpuTime returns the process's user and system CPU time.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestParkedWorkersUseNoCPU: eight workers parked on an empty port are blocked
// in the runtime, not spinning, and the process uses next to no CPU while
// they wait a second. The bound (5% of one core) is far above what the
// runtime's own housekeeping uses and far below one spinning goroutine.
func TestParkedWorkersUseNoCPU(t *testing.T) {
	p := newPort(t, 2)
	done := make(chan struct{}, 8)
	for range 8 {
		go func() {
			p.NewWorker().Get(context.Background())
			done <- struct{}{}
		}()
	}
	eventually(t, func() bool { return p.Stats().Waiting == 8 }, "eight waiters")
	time.Sleep(10 * time.Millisecond) // past the waiters' few yields

	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	parked := 0
	for _, g := range strings.Split(stacks, "\n\n") {
		if strings.Contains(g, "iocp.(*Worker).wait") {
			assert.Regexp(t, `^goroutine \d+ \[(chan receive|select)`, g)
			parked++
		}
	}
	assert.Equal(t, 8, parked)

	before := cpuTime(t)
	time.Sleep(time.Second)
	used := cpuTime(t) - before
	t.Logf("CPU used in one second of waiting: %v", used)
	assert.Less(t, used, 50*time.Millisecond)

	p.Close()
	for range 8 {
		<-done
	}
}
