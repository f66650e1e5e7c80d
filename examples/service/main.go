// Command service is an HTTP JSON API whose every request makes one
// backend call and then does some CPU work, served in one of three ways,
// to compare them: a goroutine per request (net/http's default), the
// same with a GOMAXPROCS-sized semaphore around the work, or the work run
// on a shared iocp.Pool with the backend call marked as a blocking wait.
//
//	go run . -mode iocp -backend sqlite   # serve on 127.0.0.1:8080 until interrupted
//	curl '127.0.0.1:8080/item?id=42'
//	go run . -check                       # every mode and backend, checked, in a few seconds
//
// The backends are an embedded SQLite database (modernc.org/sqlite, pure
// Go) and a TCP service of its own, in-process on loopback, that answers
// after a delay. See README.md and bench.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"
)

// defaultWork is the default of -work: sha256 rounds that take about
// 0.4 ms on the machine this was written on (2 cores of a shared cloud
// VM, Xeon with the SHA extensions: 75 to 90 ns a round of 32 bytes,
// the low end when the machine is quiet). -check and the server print
// what they take where they run; -work calibrates.
const defaultWork = 5000

// defaultDelay is the default of -delay.
const defaultDelay = 2 * time.Millisecond

func main() {
	var (
		addr  = flag.String("addr", "127.0.0.1:8080", "address to listen on")
		mode  = flag.String("mode", modeGoroutine, "dispatch: goroutine, semaphore or iocp")
		be    = flag.String("backend", "sqlite", "backend: sqlite or net")
		delay = flag.Duration("delay", defaultDelay, "the net backend's wait before it answers")
		work  = flag.Int("work", defaultWork, "CPU work a request, in sha256 rounds")
		check = flag.Bool("check", false, "start the server in every mode and backend on loopback, check its answers, and exit")
		prof  = flag.String("cpuprofile", "", "write a CPU profile of the serving to this file")
	)
	flag.Parse()
	if *prof != "" {
		f, err := os.Create(*prof)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "service:", err)
			os.Exit(1)
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	if *work < 1 {
		fmt.Fprintln(os.Stderr, "service: -work must be at least 1")
		os.Exit(2)
	}
	cfg := config{mode: *mode, backend: *be, delay: *delay, work: *work}
	fmt.Printf("work: %d sha256 rounds, %v a request here\n", cfg.work, timeWork(cfg.work))
	if *check {
		if err := runCheck(os.Stdout, cfg); err != nil {
			fmt.Fprintln(os.Stderr, "service:", err)
			os.Exit(1)
		}
		return
	}
	if err := serve(cfg, *addr); err != nil {
		fmt.Fprintln(os.Stderr, "service:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// serve runs the service until SIGINT or SIGTERM, then shuts it down.
func serve(cfg config, addr string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := start(cfg, addr)
	if err != nil {
		return err
	}
	fmt.Printf("listening on http://%s/item?id=N (mode %s, backend %s)\n", s.addr(), cfg.mode, cfg.backend)
	select {
	case <-ctx.Done():
	case err := <-s.errc:
		s.errc <- err // for shutdown
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.shutdown(sctx)
}
