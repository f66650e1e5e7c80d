//go:build race

package iocp

// raceEnabled is true when the race detector is on: it allocates on
// its own account, so allocation counts mean nothing then.
const raceEnabled = true
