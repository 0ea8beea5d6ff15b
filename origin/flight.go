package origin

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
)

// ErrPass tells waiters that the flight will not be shared (the response is
// not cacheable, or too big to keep): each must fetch on its own.
var ErrPass = errors.New("flight not shared")

// errNoHead is the error waiters see when the leader finishes without ever
// publishing headers; it wraps ErrPass so that they fetch on their own.
var errNoHead = &passError{"flight finished without a response"}

type passError struct{ msg string }

func (e *passError) Error() string { return e.msg }
func (e *passError) Unwrap() error { return ErrPass }

// ErrNoReaders is returned by Write on a discarding flight once no reader
// is attached: nobody can read the rest (readers created after Discard get
// ErrPass) and nothing is stored, so the leader should stop fetching.
var ErrNoReaders = errors.New("origin: discarded flight has no readers left")

var (
	errReaderClosed = errors.New("origin: read on closed flight reader")
	errFlightDone   = errors.New("origin: write to a finished flight")
)

// ErrClosed is what a flight started after Group.Close ends with: the group
// no longer starts fetches.
var ErrClosed = errors.New("origin: flight group closed")

// errPanic ends a flight whose fetch panicked, so its waiters do not hang.
var errPanic = errors.New("origin: flight fetch panicked")

// Fetch performs the upstream fetch of a flight: it publishes the head,
// writes the body, and returns nil once the body is complete (any error:
// the body failed). It runs on a goroutine the group owns, with the group's
// context, so no one client going away cuts the fetch short for the others.
// It must not keep w after it returns.
type Fetch[M any] func(ctx context.Context, w *Writer[M]) error

// GroupConfig configures a Group.
type GroupConfig[M any] struct {
	// Context is given to every Fetch; cancel it to stop them (shutdown).
	// nil means context.Background().
	Context context.Context
	// Go starts a fetch goroutine. The caller owns it: tracks it, recovers
	// its panics, and returns false (nothing started) once it no longer
	// takes work. nil means the go statement.
	Go func(func()) bool
	// Keep receives the head's Meta and the whole body of a flight that
	// completed without Discard or Private, before the flight leaves the
	// group, so no request falls between the flight and the store. nil:
	// nothing is kept.
	Keep func(meta M, body []byte)
}

// Group holds the flights in progress, one per key, with metadata of type M
// published by each leader to its waiters. Use NewGroup. A Group is safe for
// concurrent use.
type Group[M any] struct {
	cfg  GroupConfig[M]
	mu   sync.Mutex              // guards m and live
	m    map[string]*Flight[M]   // flights new requests join
	live map[*Flight[M]]struct{} // flights whose fetch runs (joinable or not)
}

// NewGroup returns an empty Group.
func NewGroup[M any](cfg GroupConfig[M]) *Group[M] {
	if cfg.Context == nil {
		cfg.Context = context.Background()
	}
	if cfg.Go == nil {
		cfg.Go = func(fn func()) bool { go fn(); return true }
	}
	return &Group[M]{cfg: cfg, m: make(map[string]*Flight[M]), live: make(map[*Flight[M]]struct{})}
}

// Call is one caller's view of a flight: the leader (whose Do started the
// fetch) or a waiter.
type Call[M any] struct {
	f       *Flight[M]
	leader  bool
	refused bool
}

// Do returns the flight for key, starting fetch for it when none is in
// progress. The group drives the flight's whole life: it runs fetch on a
// goroutine of its own, ends the flight with fetch's result (a panic ends it
// with an error), gives a complete body to Keep, then removes the flight —
// callers only Wait and read. A complete flight stays joinable until Keep
// returns: late requests read its body from memory instead of fetching again.
// When GroupConfig.Go refuses the fetch (shutdown), fetch is never called:
// the leader's call reports Refused and its flight ends with ErrClosed, so
// whatever fetch was to release is the caller's to release.
func (g *Group[M]) Do(key string, fetch Fetch[M]) Call[M] {
	g.mu.Lock()
	if f, ok := g.m[key]; ok {
		g.mu.Unlock()
		f.waiters.Add(1)
		return Call[M]{f: f}
	}
	f := newFlight(g, key)
	g.m[key] = f
	g.live[f] = struct{}{}
	g.mu.Unlock()
	if !g.cfg.Go(func() { g.run(f, fetch) }) {
		f.finish(ErrClosed)
		g.done(f)
		return Call[M]{f: f, leader: true, refused: true}
	}
	return Call[M]{f: f, leader: true}
}

// run is a flight's life: fetch, end, keep, leave the group.
func (g *Group[M]) run(f *Flight[M], fetch Fetch[M]) {
	defer g.done(f)
	defer func() {
		if r := recover(); r != nil {
			f.finish(errPanic)
			g.forget(f)
			panic(r) // for the owner of the goroutine (GroupConfig.Go)
		}
	}()
	err := fetch(g.cfg.Context, &Writer[M]{f: f})
	f.finish(err)
	if body, ok := f.Bytes(); ok && g.cfg.Keep != nil {
		g.cfg.Keep(f.head.Meta, body) // head is immutable once done
	}
	g.forget(f)
}

// forget removes f from the group if it is still the flight for its key (a
// newer flight for the same key is left alone).
func (g *Group[M]) forget(f *Flight[M]) {
	g.mu.Lock()
	if g.m[f.key] == f {
		delete(g.m, f.key)
	}
	g.mu.Unlock()
}

// done forgets f and its fetch.
func (g *Group[M]) done(f *Flight[M]) {
	g.forget(f)
	g.mu.Lock()
	delete(g.live, f)
	g.mu.Unlock()
}

// Abort ends every flight in progress with err: blocked writers and readers
// return, so fetches stop (shutdown, once the context is cancelled).
func (g *Group[M]) Abort(err error) {
	g.mu.Lock()
	fs := make([]*Flight[M], 0, len(g.live))
	for f := range g.live {
		fs = append(fs, f)
	}
	g.mu.Unlock()
	for _, f := range fs {
		f.finish(err)
	}
}

// Len returns the number of flights in the group: in progress, or complete
// and not yet kept.
func (g *Group[M]) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.m)
}

// Leader reports whether this caller's Do started the fetch.
func (c Call[M]) Leader() bool { return c.leader }

// Refused reports whether the group refused to start this leader's fetch
// (GroupConfig.Go returned false): fetch was never called, and Wait returns
// ErrClosed (as it does for a waiter that joined the flight meanwhile).
func (c Call[M]) Refused() bool { return c.refused }

// Key returns the flight's key.
func (c Call[M]) Key() string { return c.f.key }

// Wait blocks until the head is published (it returns it), or the flight
// ended without one (it returns the fetch's error: ErrPass, or something
// that wraps it, means "fetch on your own"), or ctx is done (it returns
// ctx.Err(); the flight goes on for the others). The leader of a Private
// flight gets the private head; its waiters get ErrPass.
func (c Call[M]) Wait(ctx context.Context) (Head[M], error) {
	if c.leader {
		return c.f.waitLeader(ctx)
	}
	return c.f.wait(ctx)
}

// Reader returns a reader of the whole body: Read returns bytes as they are
// written, blocks while none are available, and returns io.EOF at the end of
// a complete body or the fetch's error. It returns ErrPass (and no reader)
// when the flight stopped keeping its body (Writer.Discard) before the
// reader could attach: the caller then fetches on its own instead of sending
// a truncated body. Close detaches the reader without affecting the fetch.
func (c Call[M]) Reader() (io.ReadCloser, error) {
	r := c.f.newReader()
	if r.err != nil {
		return nil, r.err
	}
	return r, nil
}

// Bytes returns the whole body once the flight completed, unless it was
// discarded. The slice is shared: do not modify it.
func (c Call[M]) Bytes() ([]byte, bool) { return c.f.Bytes() }

// Writer is a Fetch's side of its flight.
type Writer[M any] struct{ f *Flight[M] }

// Publish makes the response head known to every caller's Wait. Only the
// first Publish (or Private) counts. The flight keeps h as is: do not modify
// h.Header afterwards.
func (w *Writer[M]) Publish(h Head[M]) { w.f.publish(h, false) }

// Private ends the flight for the waiters (their Wait returns ErrPass: each
// fetches on its own) and hands h to the leader's Wait alone: a response
// that must not be shared but that its leader's client still gets. If the
// leader no longer waits, drop receives h.Meta (to release what it holds).
// The fetch should return nil right after.
func (w *Writer[M]) Private(h Head[M], drop func(M)) { w.f.private(h, drop) }

// Write appends a copy of p to the body and wakes the readers. It implements
// io.Writer. After Discard it blocks while the bytes not yet read by every
// attached reader exceed the window (backpressure), and fails with
// ErrNoReaders once every reader has detached.
func (w *Writer[M]) Write(p []byte) (int, error) { return w.f.write(p) }

// Discard stops retaining the body: from now on only bytes not yet read by
// every attached reader are kept, and Write blocks while that backlog
// exceeds window bytes. Readers attached afterwards get ErrPass, the key
// leaves the group so new requests start their own fetch, and nothing is
// kept. Use it when the object turns out too big to store.
func (w *Writer[M]) Discard(window int) { w.f.discardBody(window) }

// Head is the response head published by the leader. It must be treated as
// immutable: every waiter receives the same Header slice and Meta value.
type Head[M any] struct {
	Status        int
	Header        []Field
	ContentLength int64 // -1 when unknown
	// Meta is whatever the leader wants every waiter to see (e.g. the
	// cache entry being built).
	Meta M
}

// Chunk sizes of the body buffer. The body is kept as a list of chunks that
// are only ever appended to, so a reader holding a slice of old bytes is
// never affected by growth (no reallocation moves or rewrites written
// bytes). Chunks grow geometrically so a small object costs a small
// allocation and a large one a modest number of chunks.
const (
	minChunk = 4 << 10
	maxChunk = 1 << 20
	// maxExactChunk: a body whose Content-Length is known and at most this
	// size gets one exact chunk, so Bytes needs no copy. Larger bodies are
	// not allocated up front on the upstream's word alone.
	maxExactChunk = 8 << 20
)

// Flight is one in-flight fetch shared by every requester of a key.
type Flight[M any] struct {
	g       *Group[M]
	key     string
	waiters atomic.Int64  // Join calls that found this flight
	ready   chan struct{} // closed once Wait can return (head, or error)

	mu       sync.Mutex
	cond     sync.Cond                     // on mu: bytes appended, end of body, reader detached, reader progress while the writer waits
	head     Head[M]                       // guarded by mu
	hasHead  bool                          // guarded by mu
	waitErr  error                         // what Wait returns when there is no head; guarded by mu
	done     bool                          // Finish or Release happened; guarded by mu
	err      error                         // body outcome once done (nil: complete); guarded by mu
	chunks   [][]byte                      // body bytes still retained; guarded by mu
	first    int64                         // body offset of chunks[0]; guarded by mu
	dropped  int                           // chunks dropped before chunks[0] (Discard); guarded by mu
	size     int64                         // body bytes written so far; guarded by mu
	discard  bool                          // guarded by mu
	window   int64                         // backlog allowed while discarding; guarded by mu
	readers  map[*flightReader[M]]struct{} // attached readers; guarded by mu
	full     []byte                        // Bytes result, built once; guarded by mu
	writerOn atomic.Bool                   // a discarding Write waits for readers to advance
	priv     bool                          // head is the leader's alone (Writer.Private); guarded by mu
	drop     func(M)                       // releases a private head nobody took; guarded by mu
	taken    bool                          // the leader took the private head, or gave up waiting; guarded by mu
}

func newFlight[M any](g *Group[M], key string) *Flight[M] {
	f := &Flight[M]{g: g, key: key, ready: make(chan struct{}), readers: make(map[*flightReader[M]]struct{})}
	f.cond.L = &f.mu
	return f
}

// Waiters returns how many Do calls found this flight in progress (every
// requester besides the leader).
func (f *Flight[M]) Waiters() int { return int(f.waiters.Load()) }

// publish makes the head known (only the first counts; none after finish).
func (f *Flight[M]) publish(h Head[M], private bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hasHead || f.done {
		return false
	}
	f.head, f.hasHead, f.priv = h, true, private
	close(f.ready)
	return true
}

// private publishes h for the leader alone and ends the flight for the
// others; see Writer.Private.
func (f *Flight[M]) private(h Head[M], drop func(M)) {
	if !f.publish(h, true) {
		if drop != nil {
			drop(h.Meta)
		}
		return
	}
	f.g.forget(f)
	f.mu.Lock()
	f.done, f.err = true, ErrPass
	f.cond.Broadcast()
	gone := f.taken
	f.drop = drop
	f.mu.Unlock()
	if gone && drop != nil {
		drop(h.Meta)
	}
}

// write appends a copy of p to the body; see Writer.Write.
func (f *Flight[M]) write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return 0, errFlightDone
	}
	if f.discard {
		f.waitForReaders()
		if f.done {
			// Aborted (shutdown) while we were held back.
			return 0, errFlightDone
		}
		if len(f.readers) == 0 {
			return 0, ErrNoReaders
		}
	}
	n := len(p)
	for len(p) > 0 {
		last := len(f.chunks) - 1
		if last < 0 || len(f.chunks[last]) == cap(f.chunks[last]) {
			f.chunks = append(f.chunks, make([]byte, 0, f.nextChunk(len(p))))
			last++
		}
		c := f.chunks[last]
		k := min(len(p), cap(c)-len(c))
		// Appending within capacity writes only past every length a reader
		// has seen: bytes already published are never touched.
		f.chunks[last] = append(c, p[:k]...)
		p = p[k:]
		f.size += int64(k)
	}
	if f.discard {
		f.dropConsumed()
	}
	f.cond.Broadcast()
	return n, nil
}

// nextChunk sizes a new chunk: the exact remaining length when the head
// announced one (so Bytes of a small object is a single exact allocation),
// otherwise double the previous chunk, within [minChunk, maxChunk].
func (f *Flight[M]) nextChunk(need int) int {
	if cl := f.head.ContentLength; f.hasHead && cl > f.size && !f.discard {
		if cl <= maxExactChunk {
			return int(cl - f.size)
		}
		return int(min(cl-f.size, maxChunk))
	}
	size := minChunk
	if n := len(f.chunks); n > 0 {
		size = min(2*cap(f.chunks[n-1]), maxChunk)
	}
	if f.discard {
		// The chunk size also bounds memory beyond the window.
		size = int(min(int64(size), max(f.window, minChunk)))
	}
	return max(size, min(need, maxChunk))
}

// waitForReaders blocks (mu held) while the backlog of the slowest
// attached reader exceeds the window. Readers announce progress only while
// writerOn is set, so that the common, non-discarding path costs them
// nothing; the flag is set before the backlog is computed, so a reader that
// advances afterwards is guaranteed to see it and wake us.
func (f *Flight[M]) waitForReaders() {
	for !f.done {
		f.writerOn.Store(true)
		if f.size-f.minOffset() <= f.window {
			break
		}
		f.cond.Wait()
	}
	f.writerOn.Store(false)
}

// minOffset returns the smallest offset of an attached reader, or the body
// size when none is attached (mu held).
func (f *Flight[M]) minOffset() int64 {
	m := f.size
	for r := range f.readers {
		m = min(m, r.off.Load())
	}
	return m
}

// dropConsumed forgets the leading chunks every attached reader has passed
// (mu held). The tail chunk stays: it is still being appended to.
func (f *Flight[M]) dropConsumed() {
	low := f.minOffset()
	k := 0
	for k < len(f.chunks)-1 && f.first+int64(len(f.chunks[k])) <= low {
		f.first += int64(len(f.chunks[k]))
		k++
	}
	if k == 0 {
		return
	}
	f.dropped += k
	n := copy(f.chunks, f.chunks[k:])
	clear(f.chunks[n:])
	f.chunks = f.chunks[:n]
}

// discardBody stops retaining the body; see Writer.Discard.
func (f *Flight[M]) discardBody(window int) {
	f.g.forget(f)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.discard {
		return
	}
	f.discard, f.window, f.full = true, int64(max(window, 0)), nil
	f.dropConsumed()
}

// finish ends the body: err nil means complete (readers get io.EOF after
// the last byte), otherwise readers get err after the bytes written so far,
// and callers still in Wait without a head get err (ErrPass-wrapping
// errNoHead for a fetch that completed without a head). Calls after the
// first are ignored. A failed flight leaves the group at once.
func (f *Flight[M]) finish(err error) {
	if err != nil {
		f.g.forget(f)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return
	}
	f.done, f.err = true, err
	if !f.hasHead {
		f.waitErr = err
		if err == nil {
			f.waitErr = errNoHead
		}
		close(f.ready)
	}
	f.cond.Broadcast()
}

// Bytes returns the whole body of a complete flight, unless it was
// discarded or private. The slice is shared: do not modify it.
func (f *Flight[M]) Bytes() ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.done || f.err != nil || f.discard || f.priv || !f.hasHead {
		return nil, false
	}
	if f.full == nil {
		switch len(f.chunks) {
		case 0:
			f.full = []byte{}
		case 1:
			c := f.chunks[0]
			if cap(c)-len(c) <= len(c)/8 {
				f.full = c[:len(c):len(c)]
				break
			}
			// Don't let a store keep a mostly empty chunk alive.
			f.full = append([]byte(nil), c...)
			f.useFull()
		default:
			f.full = make([]byte, 0, f.size)
			for _, c := range f.chunks {
				f.full = append(f.full, c...)
			}
			f.useFull()
		}
	}
	return f.full, true
}

// useFull makes readers read the contiguous copy from now on (mu held), so
// the chunks can be freed as soon as no Read holds one: the body is not
// kept twice while slow readers finish. Pretending the chunks were dropped
// moves every reader's cursor to the copy (see flightReader.slice).
func (f *Flight[M]) useFull() {
	f.dropped += len(f.chunks)
	f.chunks = append(f.chunks[:0:0], f.full)
	f.first = 0
}

// wait is a waiter's Wait: see Call.Wait.
func (f *Flight[M]) wait(ctx context.Context) (Head[M], error) {
	if !f.ready1(ctx) {
		return Head[M]{}, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case !f.hasHead:
		return Head[M]{}, f.waitErr
	case f.priv:
		return Head[M]{}, ErrPass
	}
	return f.head, nil
}

// waitLeader is the leader's Wait: it takes a private head, or has it
// dropped when it gives up.
func (f *Flight[M]) waitLeader(ctx context.Context) (Head[M], error) {
	ok := f.ready1(ctx)
	f.mu.Lock()
	if !ok {
		drop, meta := f.drop, f.head.Meta
		f.taken, f.drop = true, nil
		f.mu.Unlock()
		if drop != nil {
			drop(meta)
		}
		return Head[M]{}, ctx.Err()
	}
	defer f.mu.Unlock()
	if !f.hasHead {
		return Head[M]{}, f.waitErr
	}
	f.taken, f.drop = true, nil
	return f.head, nil
}

// ready1 waits for the head or the end; false when ctx ended first.
func (f *Flight[M]) ready1(ctx context.Context) bool {
	select {
	case <-f.ready:
		return true
	default:
	}
	// Only block when the answer isn't there yet: a select with both
	// cases ready picks at random, and a known head beats a late ctx.
	select {
	case <-f.ready:
		return true
	case <-ctx.Done():
		return false
	}
}

// newReader returns a reader of the body from offset 0 (one with err
// ErrPass after Discard).
func (f *Flight[M]) newReader() *flightReader[M] {
	r := &flightReader[M]{f: f}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.discard {
		r.err = ErrPass
		return r
	}
	f.readers[r] = struct{}{}
	return r
}

// flightReader reads a Flight's body. Not safe for concurrent Reads.
type flightReader[M any] struct {
	f      *Flight[M]
	off    atomic.Int64 // next body offset; written by Read, read by the writer
	err    error        // terminal error for a reader that never attached
	closed bool         // guarded by f.mu
	chunk  int          // absolute index of the chunk holding off; guarded by f.mu
	start  int64        // body offset of that chunk; guarded by f.mu
}

func (r *flightReader[M]) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	f := r.f
	off := r.off.Load()
	f.mu.Lock()
	for !r.closed && off >= f.size && !f.done {
		f.cond.Wait()
	}
	switch {
	case r.closed:
		f.mu.Unlock()
		return 0, errReaderClosed
	case off >= f.size:
		err := f.err
		f.mu.Unlock()
		if err == nil {
			err = io.EOF
		}
		return 0, err
	}
	src := r.slice(off)
	f.mu.Unlock()

	// Copy outside the lock: src covers bytes that are already written and
	// never change, and its chunk is not dropped while off is below it.
	n := copy(p, src)
	r.off.Store(off + int64(n))
	if f.writerOn.Load() {
		f.mu.Lock()
		f.cond.Broadcast()
		f.mu.Unlock()
	}
	return n, nil
}

// slice returns the bytes from off to the end of off's chunk (f.mu held,
// off < f.size). The reader's cursor makes this O(1) per Read instead of a
// walk over the chunk list.
func (r *flightReader[M]) slice(off int64) []byte {
	f := r.f
	if r.chunk < f.dropped {
		// Discard dropped chunks that ended at or before our offset.
		r.chunk, r.start = f.dropped, f.first
	}
	for {
		c := f.chunks[r.chunk-f.dropped]
		if off < r.start+int64(len(c)) {
			return c[off-r.start:]
		}
		// Only the tail chunk grows, and off < f.size means there is a
		// later chunk: c is complete.
		r.start += int64(len(c))
		r.chunk++
	}
}

// Close detaches the reader. It is idempotent and never blocks on the
// writer; a Read blocked in another goroutine returns.
func (r *flightReader[M]) Close() error {
	if r.err != nil {
		return nil
	}
	f := r.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if !r.closed {
		r.closed = true
		delete(f.readers, r)
		if f.discard {
			f.dropConsumed()
		}
		f.cond.Broadcast()
	}
	return nil
}
