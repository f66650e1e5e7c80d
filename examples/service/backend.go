package main

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" driver: SQLite in pure Go, no cgo
)

// nRows is how many items the backends hold: ids 1 to nRows.
const nRows = 10_000

// A row is an item as a backend stores it.
type row struct {
	ID    int64
	Name  string
	Score float64
}

// rowFor is the row with the given id that both backends hold, so that
// the check can know every answer.
func rowFor(id int64) row {
	return row{ID: id, Name: fmt.Sprintf("item-%05d", id), Score: float64(id*7919%10_000) / 100}
}

// errNotFound is a backend's answer for an id it does not hold.
var errNotFound = errors.New("no such item")

// A backend answers one lookup a request. get may be called from any
// number of goroutines at once, and blocks: its callers mark that.
type backend interface {
	get(ctx context.Context, id int64) (row, error)
	close() error
}

// sqliteBackend is an embedded database: modernc.org/sqlite, a file in a
// temporary directory, read through database/sql with a prepared
// statement.
type sqliteBackend struct {
	dir  string
	db   *sql.DB
	stmt *sql.Stmt
}

func newSQLiteBackend() (*sqliteBackend, error) {
	dir, err := os.MkdirTemp("", "iocp-service-")
	if err != nil {
		return nil, err
	}
	b := &sqliteBackend{dir: dir}
	if err := b.open(filepath.Join(dir, "items.db")); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (b *sqliteBackend) open(path string) error {
	dsn := "file:" + path + "?_pragma=journal_mode(wal)&_pragma=synchronous(normal)&_pragma=busy_timeout(5000)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return err
	}
	b.db = db
	// A lookup here is CPU work in Go (the SQLite library is transpiled
	// C, not cgo), on pages that every connection soon holds in its
	// cache: beyond one connection a core, more add no throughput, only
	// memory and page caches to fill. Twice GOMAXPROCS leaves room for a
	// connection held by a goroutine that the scheduler has put aside,
	// or that is writing its answer. A request beyond that waits in
	// database/sql's queue, which is a blocking wait like any other (the
	// iocp mode marks it with Blocking). As many unused connections
	// are kept (SetMaxIdleConns): with database/sql's default of 2, a burst
	// would open and close connections, and their caches, all the time.
	n := 2 * runtime.GOMAXPROCS(0)
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	if err := seed(db); err != nil {
		return err
	}
	b.stmt, err = db.Prepare("SELECT name, score FROM items WHERE id = ?")
	return err
}

// seed creates the table and fills it with nRows rows, in one transaction.
func seed(db *sql.DB) error {
	if _, err := db.Exec("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL NOT NULL)"); err != nil {
		return err
	}
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	ins, err := tx.Prepare("INSERT INTO items (id, name, score) VALUES (?, ?, ?)")
	if err != nil {
		return err
	}
	defer ins.Close()
	for id := int64(1); id <= nRows; id++ {
		r := rowFor(id)
		if _, err := ins.Exec(r.ID, r.Name, r.Score); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (b *sqliteBackend) get(ctx context.Context, id int64) (row, error) {
	r := row{ID: id}
	err := b.stmt.QueryRowContext(ctx, id).Scan(&r.Name, &r.Score)
	if errors.Is(err, sql.ErrNoRows) {
		err = errNotFound
	}
	return r, err
}

func (b *sqliteBackend) close() error {
	var errs []error
	if b.stmt != nil {
		errs = append(errs, b.stmt.Close())
	}
	if b.db != nil {
		errs = append(errs, b.db.Close())
	}
	errs = append(errs, os.RemoveAll(b.dir))
	return errors.Join(errs...)
}

// netBackend is a TCP service of its own, started in-process on
// loopback: it reads a request line, "<id>\n", waits delay, as a remote
// service's work and network would take, and answers "<id> <score>
// <name>\n", or "- not found\n". The handlers reach it through a pool of
// reused connections.
type netBackend struct {
	ln    net.Listener
	delay time.Duration
	wg    sync.WaitGroup // the server's goroutines

	mu     sync.Mutex
	served map[net.Conn]struct{} // the server's connections; guarded by mu
	closed atomic.Bool           // set under mu

	pooled chan *backendConn // the clients' connections kept for reuse
}

// maxPooledConns bounds the client's connections kept for reuse: as many as the
// most requests in flight in the benchmark, so that none is dialled anew
// in the steady state.
const maxPooledConns = 2048

func newNetBackend(delay time.Duration) (*netBackend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &netBackend{ln: ln, delay: delay, served: make(map[net.Conn]struct{}), pooled: make(chan *backendConn, maxPooledConns)}
	b.wg.Go(b.accept)
	return b, nil
}

// accept serves every connection on a goroutine of its own.
func (b *netBackend) accept() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return // closed
		}
		b.mu.Lock()
		if b.closed.Load() {
			b.mu.Unlock()
			c.Close()
			return
		}
		b.served[c] = struct{}{}
		b.mu.Unlock()
		b.wg.Go(func() { b.serve(c) })
	}
}

// serve answers the requests of one connection, one at a time.
func (b *netBackend) serve(c net.Conn) {
	defer func() {
		b.mu.Lock()
		delete(b.served, c)
		b.mu.Unlock()
		c.Close()
	}()
	r := bufio.NewReader(c)
	var out []byte
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		id, err := strconv.ParseInt(string(line[:len(line)-1]), 10, 64)
		if err != nil {
			return // not our client
		}
		if b.delay > 0 {
			time.Sleep(b.delay)
		}
		out = out[:0]
		if id < 1 || id > nRows {
			out = append(out, "- not found\n"...)
		} else {
			row := rowFor(id)
			out = strconv.AppendInt(out, row.ID, 10)
			out = append(out, ' ')
			out = strconv.AppendFloat(out, row.Score, 'g', -1, 64)
			out = append(out, ' ')
			out = append(out, row.Name...)
			out = append(out, '\n')
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// A backendConn is a client connection to the backend.
type backendConn struct {
	c   net.Conn
	r   *bufio.Reader
	buf []byte
}

func (b *netBackend) get(ctx context.Context, id int64) (row, error) {
	bc, err := b.conn(ctx)
	if err != nil {
		return row{}, err
	}
	r, err := bc.roundTrip(ctx, id)
	if err != nil {
		bc.c.Close() // in an unknown state: not reused
		return row{}, err
	}
	b.put(bc)
	if r.ID == 0 {
		return r, errNotFound
	}
	return r, nil
}

// conn returns a connection kept for reuse, or dials one.
func (b *netBackend) conn(ctx context.Context) (*backendConn, error) {
	select {
	case bc := <-b.pooled:
		return bc, nil
	default:
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", b.ln.Addr().String())
	if err != nil {
		return nil, err
	}
	return &backendConn{c: c, r: bufio.NewReader(c), buf: make([]byte, 0, 64)}, nil
}

// put keeps bc for reuse, or closes it if enough are kept or the backend
// is closed.
func (b *netBackend) put(bc *backendConn) {
	if !b.closed.Load() {
		select {
		case b.pooled <- bc:
			return
		default:
		}
	}
	bc.c.Close()
}

// roundTrip sends one request and reads its answer; the end of ctx
// interrupts it.
func (bc *backendConn) roundTrip(ctx context.Context, id int64) (row, error) {
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { bc.c.SetDeadline(time.Unix(1, 0)) })
		defer stop()
	}
	bc.buf = strconv.AppendInt(bc.buf[:0], id, 10)
	bc.buf = append(bc.buf, '\n')
	if _, err := bc.c.Write(bc.buf); err != nil {
		return row{}, ctxErr(ctx, err)
	}
	line, err := bc.r.ReadSlice('\n')
	if err != nil {
		return row{}, ctxErr(ctx, err)
	}
	if err := ctx.Err(); err != nil {
		return row{}, err // the deadline may be set: the connection is not reused
	}
	return parseRow(line[:len(line)-1])
}

// parseRow parses "<id> <score> <name>", or "- not found" as the zero row.
func parseRow(line []byte) (row, error) {
	if len(line) > 0 && line[0] == '-' {
		return row{}, nil
	}
	s := string(line)
	id, rest, ok1 := strings.Cut(s, " ")
	score, name, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 {
		return row{}, fmt.Errorf("backend: bad answer %q", s)
	}
	r := row{Name: name}
	var err1, err2 error
	r.ID, err1 = strconv.ParseInt(id, 10, 64)
	r.Score, err2 = strconv.ParseFloat(score, 64)
	if err := errors.Join(err1, err2); err != nil {
		return row{}, fmt.Errorf("backend: bad answer %q: %w", s, err)
	}
	return r, nil
}

// ctxErr is ctx's error if ctx has ended, which is then why err happened.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return err
}

// close stops the server, closes its connections and the clients' kept
// ones, and waits for the server's goroutines.
func (b *netBackend) close() error {
	err := b.ln.Close()
	b.mu.Lock()
	b.closed.Store(true)
	for c := range b.served {
		c.Close()
	}
	b.mu.Unlock()
	for {
		select {
		case bc := <-b.pooled:
			bc.c.Close()
			continue
		default:
		}
		break
	}
	b.wg.Wait()
	return err
}
