package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/iocp-go/iocp"
)

// The dispatch modes: how a request's work (the backend call and the CPU
// work) is run.
const (
	modeGoroutine = "goroutine" // on the request's goroutine, as net/http does
	modeSemaphore = "semaphore" // there too, with one of GOMAXPROCS slots held throughout
	modeIOCP      = "iocp"      // on a shared iocp.Pool, the backend call marked with Blocking
	// modeSplit waits for the backend on the request's goroutine and runs
	// only the CPU work on the pool: the shape for a backend known to wait.
	modeSplit = "iocp-split"
)

var (
	modes    = []string{modeGoroutine, modeSemaphore, modeIOCP, modeSplit}
	backends = []string{"sqlite", "net"}
)

// A config says how to run the service.
type config struct {
	mode    string
	backend string
	delay   time.Duration // the net backend's per-request wait
	work    int           // sha256 rounds a request
}

// An item is the JSON answer.
type item struct {
	ID     int64   `json:"id"`
	Name   string  `json:"name"`
	Score  float64 `json:"score"`
	Digest string  `json:"digest"`
}

// A service is the HTTP server, its backend and its dispatch.
type service struct {
	cfg  config
	be   backend
	sem  chan struct{} // semaphore mode
	pool *iocp.Pool    // iocp mode
	srv  *http.Server
	ln   net.Listener
	errc chan error // Serve's error
}

// start starts the service on addr, with its backend seeded first.
func start(cfg config, addr string) (_ *service, err error) {
	s := &service{cfg: cfg, errc: make(chan error, 1)}
	defer func() {
		if err != nil {
			s.closeBackend()
		}
	}()
	switch cfg.mode {
	case modeGoroutine:
	case modeSemaphore:
		s.sem = make(chan struct{}, runtime.GOMAXPROCS(0))
	case modeIOCP, modeSplit:
		// One pool for the whole server: concurrency GOMAXPROCS, twice as
		// many workers to begin with, more while all are blocked.
		port, err := iocp.NewPort(0, iocp.WithName("service"))
		if err != nil {
			return nil, err
		}
		s.pool, err = port.NewPool(0, nil)
		if err != nil {
			port.Close()
			return nil, err
		}
	default:
		return nil, fmt.Errorf("-mode %q: want one of %v", cfg.mode, modes)
	}
	switch cfg.backend {
	case "sqlite":
		s.be, err = newSQLiteBackend()
	case "net":
		s.be, err = newNetBackend(cfg.delay)
	default:
		err = fmt.Errorf("-backend %q: want one of %v", cfg.backend, backends)
	}
	if err != nil {
		return nil, err
	}
	s.ln, err = net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /item", s.serveItem)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	go func() { s.errc <- s.srv.Serve(s.ln) }()
	return s, nil
}

// addr is where the service listens.
func (s *service) addr() string { return s.ln.Addr().String() }

// shutdown stops the service: the HTTP server first, which waits for the
// handlers in flight (ctx bounds that wait, then it closes them), then the
// pool, then the backend.
func (s *service) shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	if serr := <-s.errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return errors.Join(err, s.closeBackend())
}

func (s *service) closeBackend() error {
	var err error
	if s.pool != nil {
		err = s.pool.Close()
	}
	if s.be != nil {
		err = errors.Join(err, s.be.close())
	}
	return err
}

// serveItem is GET /item?id=N.
func (s *service) serveItem(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.URL.Query().Get("id"), 10, 64)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "id: want an integer"})
		return
	}
	ctx := r.Context()
	var it item
	switch s.cfg.mode {
	case modeGoroutine:
		it, err = s.lookup(ctx, id)
	case modeSemaphore:
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			writeError(w, ctx.Err())
			return
		}
		it, err = s.lookup(ctx, id)
		<-s.sem
	case modeIOCP:
		it, err = iocp.Call(ctx, s.pool, func(ctx context.Context) (item, error) { return s.lookup(ctx, id) })
	case modeSplit:
		var r row
		if r, err = s.be.get(ctx, id); err == nil {
			it, err = iocp.Call(ctx, s.pool, func(context.Context) (item, error) { return s.render(r), nil })
		}
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, it)
}

// lookup is a request's work: one backend call, then the CPU work.
// In the iocp mode ctx is the one iocp.Call gave the function, which
// carries its worker: Blocking then frees the worker's slot for the
// length of the call, while the CPU has room. In the other modes there is
// no worker to mark.
func (s *service) lookup(ctx context.Context, id int64) (item, error) {
	var (
		r   row
		err error
	)
	get := func() { r, err = s.be.get(ctx, id) }
	if s.cfg.mode == modeIOCP {
		iocp.Blocking(ctx, get)
	} else {
		get()
	}
	if err != nil {
		return item{}, err
	}
	return s.render(r), nil
}

// render is the CPU work on a row.
func (s *service) render(r row) item {
	return item{ID: r.ID, Name: r.Name, Score: r.Score, Digest: digest(r, s.cfg.work)}
}

// digest is the CPU work: rounds of sha256, the first over the row.
func digest(r row, rounds int) string {
	b := strconv.AppendInt(nil, r.ID, 10)
	b = append(b, '|')
	b = append(b, r.Name...)
	b = append(b, '|')
	b = strconv.AppendFloat(b, r.Score, 'g', -1, 64)
	sum := sha256.Sum256(b)
	for range rounds - 1 {
		sum = sha256.Sum256(sum[:])
	}
	return hex.EncodeToString(sum[:])
}

func writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, errNotFound):
		code = http.StatusNotFound
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.Is(err, iocp.ErrClosed):
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// timeWork returns how long digest takes with the given rounds here: the
// median of a few runs.
func timeWork(rounds int) time.Duration {
	const runs = 51
	ds := make([]time.Duration, runs)
	r := rowFor(4242)
	for i := range ds {
		t := time.Now()
		digest(r, rounds)
		ds[i] = time.Since(t)
	}
	slices.Sort(ds)
	return ds[runs/2]
}
