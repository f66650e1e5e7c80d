package iocp

import "golang.org/x/sys/windows"

// processCPU returns the CPU time the process has used, user and system,
// in nanoseconds; 0 if it cannot tell (the pacer then sees a CPU with room).
// Windows updates it at the clock interrupt, every 15.6 ms by default, so
// the pacer's view there is coarser than its tick.
func processCPU() int64 {
	var creation, exit, kernel, user windows.Filetime
	if windows.GetProcessTimes(windows.CurrentProcess(), &creation, &exit, &kernel, &user) != nil {
		return 0
	}
	ft := func(f windows.Filetime) int64 { return (int64(f.HighDateTime)<<32 | int64(f.LowDateTime)) * 100 }
	return ft(kernel) + ft(user)
}
