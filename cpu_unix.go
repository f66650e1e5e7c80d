//go:build unix

package iocp

import "syscall"

// processCPU returns the CPU time the process has used, user and system,
// in nanoseconds; 0 if it cannot tell (the pacer then sees a CPU with room).
func processCPU() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
