package iocp

import (
	"flag"
	"testing"
)

// The port tests run on the pure-Go port, and with -native on the native
// backend (Windows), under the same names (SPEC S50).
var nativeFlag = flag.Bool("native", false, "run the port tests on the native backend (WithNative)")

// portOptions returns opts, and WithNative when the tests run on the
// native backend.
func portOptions(opts ...Option) []Option {
	if *nativeFlag {
		return append(opts, WithNative())
	}
	return opts
}

// concurrencyEnforced reports whether the port under test enforces the
// concurrency value: the pure-Go port does, and so does a Windows kernel,
// but Wine does not.
func concurrencyEnforced() bool { return !*nativeFlag || !underWine() }

// kernelScheduled skips a test of the kernel's scheduler (S21-S31) where
// the kernel under test does not have one to test (SPEC S51).
func kernelScheduled(t *testing.T) {
	t.Helper()
	switch {
	case !*nativeFlag:
	case underWine():
		t.Skip("Wine does not honour a completion port's concurrency value, and its waiter release order is not the kernel's")
	default:
		// TODO(issue 4): drive each worker from a goroutine of its own.
		t.Skip("these tests hand workers from one goroutine to another, and a native port's worker keeps the goroutine of its first Get")
	}
}
