// Package iocp gives Go programs the semantics of Windows I/O completion
// ports: a FIFO queue of completion packets, workers released newest first,
// and a concurrency value that bounds how many of them run at once.
//
// # Model
//
// A [Port] holds a queue of [Packet] values. [Port.Post] appends one; a
// [Worker], made by [Port.NewWorker] and owned by one goroutine, takes them
// with [Worker.Get], [Worker.TryGet] or [Worker.GetBatch]. The Windows
// names map as follows:
//
//	CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, n)   NewPort(n)
//	a thread that calls GetQueuedCompletionStatus              a *Worker
//	GetQueuedCompletionStatus(port, timeout)                   w.Get(ctx), the timeout being ctx's deadline
//	GetQueuedCompletionStatusEx                                w.GetBatch(ctx, dst)
//	PostQueuedCompletionStatus                                 port.Post(pkt)
//	the thread waits on something else                         w.Block() ... w.Unblock()
//	the thread exits                                           w.Close()
//	CloseHandle(port)                                          port.Close()
//	CreateIoCompletionPort(file, port, key, 0)                 port.Associate(source, key)
//	ReadFile, WriteFile, AcceptEx... with an OVERLAPPED        h.Read(ov, buf), h.Write, h.Accept...
//	CancelIoEx(file, ov)                                       h.Cancel(ov)
//
// Goroutines have no identity that a library may use, and a library cannot
// see a goroutine block. That is why a worker is an explicit handle and
// why blocking is marked explicitly: the port knows only what its workers
// tell it.
//
// # Ordering
//
// Packets leave the queue in the order their Posts took effect; the packets
// of one goroutine keep the order in which it posted them. Workers that wait
// are released last in, first out: a packet goes to the worker that started
// waiting most recently, whose stack and caches are the warmest. A packet
// handed to a released worker is that worker's; a Get that starts after the
// Post cannot take it.
//
// # Concurrency value
//
// A port counts its running workers: a worker runs from the moment a Get
// hands it a packet until it calls Get again, blocks or closes. While
// Concurrency workers run, packets stay queued even if other workers wait.
// A running worker that calls Get gives its slot up and takes the next
// packet at once if one is queued, so with a backlog one worker keeps
// running and no other goroutine is woken. [Port.Get] is a worker for one
// call: it waits for a slot, but the work done with its packet is not
// counted. Use a Worker to bound the work.
//
// Close every worker that stops calling Get: see [Worker.Get] on idle
// workers. [Worker.Close] may be called from any goroutine; a Get in
// progress returns [ErrClosed].
//
// # Blocking
//
// A running worker that waits on something else (a lock, a database call,
// a sleep) calls [Worker.Block] before and [Worker.Unblock] after, or wraps
// the wait in [Worker.Blocking]. Block frees the worker's slot, and a
// waiting worker is released into it if a packet is queued. Unblock counts
// the worker again at once, even past the concurrency value; the port then
// releases no one until the count drops below it, as Windows does. Code deep
// in a call chain that holds only a context can use [Blocking] with a
// context made by [NewContext], or given by a pool. On a pool's worker,
// [Blocking] frees the slot only while the CPU has room, so that a region
// marked blocking that in fact computes cannot oversubscribe the CPU;
// Block and Unblock are always exact.
//
// # Associated sources
//
// [Port.Associate] ties a source to the port with a key: a net.Conn,
// net.Listener or net.PacketConn, an *os.File, any io.Reader, io.Writer,
// io.ReaderAt or io.WriterAt, or a [Func]. Operations started on the
// returned [Handle] each take an [Overlapped] and complete with exactly
// one packet carrying the key, the Overlapped, the bytes transferred and
// the error; the Get that dequeues it fills in the Overlapped's result
// fields. Per-operation state rides in [Overlapped.Value]. An operation
// may complete, and be dequeued, before the call that started it returns,
// so set everything the worker will need before that call.
//
// Go cannot wait for I/O without a goroutine, so each pending operation
// has one: the reads of a handle run one after another on one goroutine,
// the writes on another, positional operations and functions each on
// their own. They exist while operations are pending and exit when the
// handle has none. On unix systems a Write to a socket whose buffer has
// room completes in the calling goroutine. The concurrency value bounds the workers, which
// run the program's code; these goroutines only wait for the sources.
//
// [Handle.Cancel] interrupts a running operation through its source (a
// deadline for sockets and pipes, the context for a Func); a source that
// cannot be interrupted finishes the operation. [Handle.Close] aborts
// everything pending and closes the source, and [Port.Close] closes every
// handle of the port.
//
// # Pools
//
// [Port.NewPool] starts the workers a port needs and runs a [Handler] for
// every packet, the pre-allocated thread pool the Windows documentation
// pairs a port with: twice as many workers as the concurrency value by
// default, so that a handler that blocks (marked with [Blocking] on its
// context) has another worker take its slot. A handler's panic is
// recovered and reported ([PanicError]), and the pool serves on.
// A service shares one pool across its requests: [Call] runs a request's
// function on it under the request's context and returns its result, and
// [Pool.Group] is errgroup on the pool, one group per caller.
// [Pool.Bind] is BindIoCompletionCallback: the completions of a source's
// operations call a function. [Default] is a process-wide pool,
// made on first use, whose concurrency follows GOMAXPROCS, and [Bind]
// binds to it.
//
// [Pool.Shutdown] is graceful, as http.Server.Shutdown is: new Posts and
// Accepts return [ErrClosed] and the pending Accepts are aborted, but
// handlers in flight go on starting operations on their handles (and may
// Bind new sources) until the port is quiet: nothing queued, no handler
// running, no write or function pending. Then every handle is closed, and
// the aborted operations' packets still reach their callbacks, so that
// per-connection cleanup runs, before the port closes. [Pool.Close] does
// the same at once, discarding the posted packets still queued. While a
// port drains, only Post, Accept and NewPool return ErrClosed.
//
// Pool workers carry pprof labels (the port's name, the worker's index),
// and each packet runs in a runtime/trace region while tracing is on. A
// port made with concurrency 0 and [FollowGOMAXPROCS] keeps its
// concurrency value equal to GOMAXPROCS as the runtime or the program
// changes it.
//
// # Memory model
//
// In the terms of https://go.dev/ref/mem: a Post that returns nil is
// synchronized before the Get, TryGet or GetBatch that returns its packet,
// as the end of an associated operation is before the Get that returns its
// completion, and Close is synchronized before every call that returns [ErrClosed]
// because of it.
//
// # Platforms
//
// The port is pure Go and behaves the same on every platform Go supports,
// but for what the sources themselves allow: on Windows the ends of
// os.Pipe have no deadlines, so their operations cannot be cancelled.
//
// # Native backend
//
// On Windows, NewPort(n, WithNative()) makes the port on a kernel
// completion port instead (elsewhere it returns an error). The API is the
// same, and so are Post, Get, GetBatch, Close, Shutdown, Stats, the
// association of Go sources and Pools; what changes is who schedules:
//
//   - A worker runs on one OS thread from its first Get until it closes:
//     Get locks the goroutine to its thread (runtime.LockOSThread), and
//     Close unlocks it. Getting from a worker on another goroutine panics.
//     Close may come from any goroutine: it interrupts a Get in progress,
//     and the thread, which only its own goroutine can unlock, leaves the
//     kernel's port when that goroutine returns from the Get or makes one
//     more call on the worker. The kernel counts threads, so the count of
//     running threads is the count of running workers.
//   - The kernel sees real waits: a worker whose goroutine blocks, on a
//     lock, a channel or a system call, leaves its thread waiting, and the
//     kernel releases another worker in its place. Block and Unblock stay
//     valid calls and keep Stats' counts, but the kernel does not need them.
//   - Stats' Running and Waiting count workers as the library sees them;
//     the kernel keeps its own count, which Windows does not expose, and
//     does not say whom it released: Wakeups stays 0.
//   - Port.Get takes a thread for the call only: it waits on the port,
//     then leaves it, which is dearer than a Worker's Get.
//   - A context that can end reaches a wait in the kernel through an APC
//     queued to the worker's thread, which takes an allocation per wait
//     (context.AfterFunc); a wait with context.Background allocates
//     nothing.
//   - Close interrupts every worker's wait and returns once the calls
//     that were using the kernel's port have left it, a matter of
//     microseconds, before it closes the port's handle.
//   - The Go scheduler's own waits count: a goroutine that is preempted, or
//     that blocks on a channel, parks its locked thread, and the kernel may
//     release another worker meanwhile, as it does for any wait.
//   - FollowGOMAXPROCS is refused: the kernel fixes the concurrency value
//     when the port is made.
//
// A native port also takes handles that the program opened for overlapped
// I/O itself, files and named pipes: Port.AssociateFile returns a File,
// whose Read and Write are the kernel's ReadFile and WriteFile, completing
// on the port with no goroutine of the library's in between. Their
// OVERLAPPEDs live in memory pinned for the port's life, and their buffers
// are pinned while the operation is in flight. Stats.Queued counts the
// posted packets only: Windows does not tell how many completions are
// queued.
//
// # Goroutine lifetime
//
// A port starts no goroutines, but for the one that a port made with
// FollowGOMAXPROCS uses to watch GOMAXPROCS, which exits when the port is
// closed. The operations of associated handles run on goroutines that
// exit when the operation ends; Handle.Close and Port.Close end every
// operation whose source a deadline, a context or Close can interrupt. A
// closed port whose operations have ended holds no goroutine and no
// timer; every call parked on it returns [ErrClosed]. A Pool's workers
// exit once its port is closed and their handlers have returned;
// Pool.Shutdown and Pool.Close wait for them.
//
// # Statements
//
// Comments and test names cite the numbered statements the package
// promises, S1 to S51, as "SPEC S42": they are in docs/spec.md in the
// repository (https://github.com/iocp-go/iocp/blob/main/docs/spec.md),
// and each is a test named after it.
package iocp
