package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// start listens on loopback and starts the server called impl.
func start(tb testing.TB, impl string, concurrency int) (server, string) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	switch impl {
	case "port":
		s, err := startPortServer(ln, concurrency, 2*concurrency)
		if err != nil {
			tb.Fatal(err)
		}
		return s, ln.Addr().String()
	case "goroutine":
		return startGoServer(ln), ln.Addr().String()
	}
	tb.Fatalf("no server %q", impl)
	return nil, ""
}

// TestEcho checks that both servers echo every byte back on every
// connection, and that the port's handlers never ran more at once than
// its concurrency value.
func TestEcho(t *testing.T) {
	for _, impl := range []string{"port", "goroutine"} {
		t.Run(impl, func(t *testing.T) {
			s, addr := start(t, impl, 2)
			conns, err := dialAll(addr, 20)
			if err != nil {
				t.Fatal(err)
			}
			for round := range 50 {
				for i, c := range conns {
					msg := fmt.Appendf(nil, "conn %d round %d", i, round)
					if _, err := c.Write(msg); err != nil {
						t.Fatal(err)
					}
					got := make([]byte, len(msg))
					if _, err := io.ReadFull(c, got); err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, msg) {
						t.Fatalf("echo %q, want %q", got, msg)
					}
				}
			}
			closeAll(conns)
			s.Close()
			if ps, ok := s.(*portServer); ok {
				if m := ps.maxInFlight.Load(); m > 2 {
					t.Errorf("%d handlers ran at once; the concurrency value is 2", m)
				}
			}
		})
	}
}

// TestSelfTest runs the command as it runs with no arguments, shortened.
func TestSelfTest(t *testing.T) {
	if err := run("", 8, 64, 200*time.Millisecond, 0); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkEcho runs the port's echo server and a goroutine-per-connection
// server side by side: b.N requests of 64 bytes spread over the
// connections, each waiting for its echo. It reports requests/s, the p99
// latency, the most handlers the port ran at once, and the memory and
// goroutines each open connection costs (measured before the load, with
// every connection open and a read pending on it; the figure includes the
// client's end of the connection, the same for both servers).
//
//	go test -run '^$' -bench Echo -count 6 ./examples/echo
func BenchmarkEcho(b *testing.B) {
	for _, conns := range []int{16, 256, 4096} {
		for _, impl := range []string{"goroutine", "port"} {
			b.Run(fmt.Sprintf("conns=%d/impl=%s", conns, impl), func(b *testing.B) {
				if need := uint64(2*conns + 64); fdLimit() < need {
					b.Skipf("needs %d open files; the limit is %d", need, fdLimit())
				}
				benchEcho(b, impl, conns)
			})
		}
	}
}

func benchEcho(b *testing.B, impl string, n int) {
	concurrency := runtime.GOMAXPROCS(0)
	runtime.GC()
	g0, m0 := runtime.NumGoroutine(), inuse()
	s, addr := start(b, impl, concurrency)
	defer s.Close()
	conns, err := dialAll(addr, n)
	if err != nil {
		b.Fatal(err)
	}
	defer closeAll(conns)
	// One round trip on every connection: then the server has accepted
	// each and waits in a read on it.
	one := []byte{1}
	for _, c := range conns {
		if _, err := c.Write(one); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, one); err != nil {
			b.Fatal(err)
		}
	}
	time.Sleep(10 * time.Millisecond) // let the last reads start
	runtime.GC()
	// Reported at the end: ResetTimer drops the metrics reported so far.
	perConn := float64(inuse()-m0) / float64(n)
	goroutines := float64(runtime.NumGoroutine()-g0) / float64(n)

	var left atomic.Int64
	left.Store(int64(b.N))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	lat, err := load(conns, 64, func() bool { return left.Add(-1) >= 0 }, nanotime)
	elapsed := time.Since(start)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	slices.Sort(lat)
	b.ReportMetric(perConn, "B/conn")
	b.ReportMetric(goroutines, "goroutines/conn")
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(lat[len(lat)*99/100])/1e3, "p99-µs")
	if ps, ok := s.(*portServer); ok {
		b.ReportMetric(float64(ps.maxInFlight.Load()), "max-running")
	}
}

var epoch = time.Now()

func nanotime() int64 { return int64(time.Since(epoch)) }

// inuse is the memory the program holds in heap objects and stacks.
func inuse() int64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc + ms.StackInuse)
}
