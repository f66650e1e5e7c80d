//go:build !unix && !windows

package iocp

// processCPU returns 0: the process's CPU time is not known here, and the
// pacer sees a CPU with room, so that Blocking frees slots as Block does.
func processCPU() int64 { return 0 }
