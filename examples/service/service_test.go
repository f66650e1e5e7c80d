package main

import (
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestCheck runs -check's check in-process: every mode and backend, each
// server stopped cleanly (TestMain's goleak sees what it leaves).
func TestCheck(t *testing.T) {
	var out strings.Builder
	err := runCheck(&out, config{delay: defaultDelay, work: defaultWork})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkWork is a request's CPU work at the default -work.
func BenchmarkWork(b *testing.B) {
	r := rowFor(4242)
	for b.Loop() {
		digest(r, defaultWork)
	}
}
