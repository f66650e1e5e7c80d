// Command echo is a TCP echo server on a completion port: the listener and
// all its connections are bound to one iocp.Pool, whose workers (twice
// the concurrency value) run their callbacks for every completion.
//
// With no arguments it listens on a loopback port, runs its own clients
// against itself for a few seconds, and prints the throughput, latency
// percentiles and the port's Stats. With -serve it only serves, until it
// is interrupted:
//
//	go run ./examples/echo                       # self-test, about 3 s
//	go run ./examples/echo -serve 127.0.0.1:7007 # serve only
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"sync/atomic"
	"time"
)

func main() {
	var (
		serve       = flag.String("serve", "", "only serve, on this address, until interrupted")
		conns       = flag.Int("conns", 64, "client connections in the self-test")
		size        = flag.Int("size", 64, "request size in bytes, at most 4096")
		duration    = flag.Duration("duration", 3*time.Second, "length of the self-test")
		concurrency = flag.Int("concurrency", 0, "the port's concurrency value; 0 is GOMAXPROCS")
	)
	flag.Parse()
	if err := run(*serve, *conns, *size, *duration, *concurrency); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

func run(serve string, conns, size int, duration time.Duration, concurrency int) error {
	if size < 1 || size > bufSize {
		return fmt.Errorf("-size %d out of range [1, %d]", size, bufSize)
	}
	if conns < 1 {
		return fmt.Errorf("-conns %d: need at least one", conns)
	}
	if concurrency == 0 {
		concurrency = runtime.GOMAXPROCS(0)
	}
	addr := serve
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s, err := startPortServer(ln, concurrency, 2*concurrency)
	if err != nil {
		ln.Close()
		return err
	}
	defer s.Close()
	fmt.Printf("echo: serving %s with a port of concurrency %d and %d workers\n", ln.Addr(), concurrency, 2*concurrency)

	if serve != "" {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, os.Interrupt)
		<-stop
		return nil
	}

	cs, err := dialAll(ln.Addr().String(), conns)
	if err != nil {
		return err
	}
	defer closeAll(cs)
	fmt.Printf("echo: %d clients send %d-byte requests for %v\n", conns, size, duration)
	start := time.Now()
	var stop atomic.Bool
	time.AfterFunc(duration, func() { stop.Store(true) })
	lat, err := load(cs, size, func() bool { return !stop.Load() }, func() int64 { return int64(time.Since(start)) })
	elapsed := time.Since(start)
	if err != nil {
		return err
	}
	slices.Sort(lat)
	pct := func(q float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return time.Duration(lat[int(q*float64(len(lat)-1))])
	}
	fmt.Printf("requests:   %d in %v, %.0f/s\n", len(lat), elapsed.Round(time.Millisecond), float64(len(lat))/elapsed.Seconds())
	fmt.Printf("latency:    p50 %v  p90 %v  p99 %v  p99.9 %v  max %v\n",
		pct(0.50), pct(0.90), pct(0.99), pct(0.999), pct(1))
	st := s.pool.Port().Stats()
	fmt.Printf("port stats: concurrency %d, running %d, blocked %d, waiting %d, queued %d, wakeups %d, discarded %d\n",
		st.Concurrency, st.Running, st.Blocked, st.Waiting, st.Queued, st.Wakeups, st.Discarded)
	fmt.Printf("handlers:   at most %d running at once (concurrency %d)\n", s.maxInFlight.Load(), concurrency)
	return nil
}
