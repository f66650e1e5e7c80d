package main

import (
	"net"
	"runtime"
	"testing"

	"github.com/iocp-go/iocp"
)

// TestHandleCostWithoutOperations associates 1024 loopback connections that have no
// operation pending, checks that they hold no goroutine, and logs the
// bytes each Handle costs beyond the connection itself:
//
//	go test -run HandleCostWithoutOperations -v ./examples/echo
func TestHandleCostWithoutOperations(t *testing.T) {
	const n = 1024
	if fdLimit() < 2*n+64 {
		t.Skipf("needs %d open files; the limit is %d", 2*n+64, fdLimit())
	}
	port, err := iocp.NewPort(0)
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close() // closes the handles, and so the server ends
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	clients, err := dialAll(ln.Addr().String(), n)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(clients)
	servers := make([]net.Conn, n)
	for i := range servers {
		if servers[i], err = ln.Accept(); err != nil {
			t.Fatal(err)
		}
	}

	runtime.GC()
	g0, m0 := runtime.NumGoroutine(), inuse()
	hs := make([]*iocp.Handle, n)
	for i, c := range servers {
		if hs[i], err = port.Associate(c, i); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	bytes, goroutines := float64(inuse()-m0)/n, runtime.NumGoroutine()-g0
	runtime.KeepAlive(hs)
	t.Logf("an associated connection with no operation: %.0f B for its Handle, %d goroutines for %d handles", bytes, goroutines, n)
	if goroutines > 0 {
		t.Errorf("%d handles with no operation hold %d goroutines", n, goroutines)
	}
}
