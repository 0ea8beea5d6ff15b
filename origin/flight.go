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

// Group holds the flights in progress, one per key. The zero value is not
// usable: call NewGroup. A Group is safe for concurrent use.
type Group struct {
	mu sync.Mutex         // guards m
	m  map[string]*Flight // flights in progress
}

// NewGroup returns an empty Group.
func NewGroup() *Group {
	return &Group{m: make(map[string]*Flight)}
}

// Join returns the flight for key, creating it when none is in the group.
// leader is true for the creator, who must drive the flight to its end
// (Publish, Write…, Finish, then Forget; or Release) — typically from a goroutine
// independent of any one client, so that the leader's client going away
// does not cancel the fetch for the others. Every other caller is counted
// as a waiter.
func (g *Group) Join(key string) (f *Flight, leader bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.m[key]; ok {
		f.waiters.Add(1)
		return f, false
	}
	f = newFlight(g, key)
	g.m[key] = f
	return f, true
}

// Forget removes f from the group if it is still the flight for key (a
// newer flight for the same key is left alone). A leader calls it once a
// completed body is visible in the store: until then late requests keep
// joining the finished flight and read the body from memory instead of
// fetching again. Forget is idempotent.
func (g *Group) Forget(key string, f *Flight) {
	g.mu.Lock()
	if g.m[key] == f {
		delete(g.m, key)
	}
	g.mu.Unlock()
}

// Len returns the number of flights in the group: in progress, or finished
// successfully and not yet forgotten.
func (g *Group) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.m)
}

// Head is the response head published by the leader. It must be treated as
// immutable: every waiter receives the same Header slice and Meta value.
type Head struct {
	Status        int
	Header        []Field
	ContentLength int64 // -1 when unknown
	// Meta is opaque to this package: whatever the leader wants every
	// waiter to see (e.g. the cache entry being built).
	Meta any
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
type Flight struct {
	g       *Group
	key     string
	waiters atomic.Int64  // Join calls that found this flight
	ready   chan struct{} // closed once Wait can return (head, or error)

	mu       sync.Mutex
	cond     sync.Cond                  // on mu: bytes appended, end of body, reader detached, reader progress while the writer waits
	head     Head                       // guarded by mu
	hasHead  bool                       // guarded by mu
	waitErr  error                      // what Wait returns when there is no head; guarded by mu
	done     bool                       // Finish or Release happened; guarded by mu
	err      error                      // body outcome once done (nil: complete); guarded by mu
	chunks   [][]byte                   // body bytes still retained; guarded by mu
	first    int64                      // body offset of chunks[0]; guarded by mu
	dropped  int                        // chunks dropped before chunks[0] (Discard); guarded by mu
	size     int64                      // body bytes written so far; guarded by mu
	discard  bool                       // guarded by mu
	window   int64                      // backlog allowed while discarding; guarded by mu
	readers  map[*flightReader]struct{} // attached readers; guarded by mu
	full     []byte                     // Bytes result, built once; guarded by mu
	writerOn atomic.Bool                // a discarding Write waits for readers to advance
}

func newFlight(g *Group, key string) *Flight {
	f := &Flight{g: g, key: key, ready: make(chan struct{}), readers: make(map[*flightReader]struct{})}
	f.cond.L = &f.mu
	return f
}

// Key returns the flight's key.
func (f *Flight) Key() string { return f.key }

// Waiters returns how many Join calls found this flight in progress (every
// requester besides the leader).
func (f *Flight) Waiters() int { return int(f.waiters.Load()) }

// Publish makes the response head known: Wait returns it from now on. Only
// the first Publish counts, and one after Finish or Release is ignored. The
// flight keeps h as is: the caller must not modify h.Header afterwards.
func (f *Flight) Publish(h Head) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hasHead || f.done {
		return
	}
	f.head, f.hasHead = h, true
	close(f.ready)
}

// Write appends a copy of p to the body and wakes the readers. It implements
// io.Writer. After Discard it blocks while the bytes not yet read by every
// attached reader exceed the window (backpressure), and fails with
// ErrNoReaders once every reader has detached. It fails after Finish or
// Release.
func (f *Flight) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return 0, errFlightDone
	}
	if f.discard {
		f.waitForReaders()
		if f.done {
			// Finish or Release came from another goroutine (e.g. a
			// watchdog) while we were held back.
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
func (f *Flight) nextChunk(need int) int {
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
func (f *Flight) waitForReaders() {
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
func (f *Flight) minOffset() int64 {
	m := f.size
	for r := range f.readers {
		m = min(m, r.off.Load())
	}
	return m
}

// dropConsumed forgets the leading chunks every attached reader has passed
// (mu held). The tail chunk stays: it is still being appended to.
func (f *Flight) dropConsumed() {
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

// Discard stops retaining the body: from now on only bytes not yet read by
// every attached reader are kept, and Write blocks while that backlog
// exceeds window bytes. Readers created afterwards get ErrPass, and the key
// leaves the group so that new requests start their own fetch. Use it when
// the object turns out not to be storable (e.g. a chunked body grows past
// the maximum object size). Bytes then reports false.
func (f *Flight) Discard(window int) {
	f.g.Forget(f.key, f)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.discard {
		return
	}
	f.discard, f.window, f.full = true, int64(max(window, 0)), nil
	f.dropConsumed()
}

// Finish ends the body: err nil means complete (readers get io.EOF after the
// last byte), otherwise readers get err after the bytes written so far, and
// waiters still in Wait without a head get err. Calls after the first Finish
// or Release are ignored.
//
// A failed flight (err != nil) leaves the group at once. A complete one
// stays joinable — late joiners get the head and the whole body from
// memory — until the leader calls Group.Forget, typically right after the
// body is stored, so that no request falls between the flight and the store
// and fetches again. The leader must call Forget.
func (f *Flight) Finish(err error) {
	if err != nil {
		f.g.Forget(f.key, f)
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

// Release ends the flight without sharing it, before or instead of
// Publish: waiters' Wait returns err (ErrPass, or nil which means ErrPass,
// for "fetch on your own"; an origin error to map to a status otherwise).
// The key leaves the group at once, so new requests start fresh. After
// Publish, Release acts as Finish(err) with the same default.
func (f *Flight) Release(err error) {
	if err == nil {
		err = ErrPass
	}
	f.Finish(err)
}

// Bytes returns the whole body after Finish(nil), for storing, unless
// Discard was called. The slice is shared: do not modify it.
func (f *Flight) Bytes() ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.done || f.err != nil || f.discard {
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
func (f *Flight) useFull() {
	f.dropped += len(f.chunks)
	f.chunks = append(f.chunks[:0:0], f.full)
	f.first = 0
}

// Wait blocks until the head is published (it returns it), or the flight
// ended without one (it returns the error given to Release or Finish), or
// ctx is done (it returns ctx.Err(); the flight goes on for the others).
func (f *Flight) Wait(ctx context.Context) (Head, error) {
	select {
	case <-f.ready:
	default:
		// Only block when the answer isn't there yet: a select with both
		// cases ready picks at random, and a known head beats a late ctx.
		select {
		case <-f.ready:
		case <-ctx.Done():
			return Head{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.hasHead {
		return Head{}, f.waitErr
	}
	return f.head, nil
}

// NewReader returns a reader of the body from offset 0. Read returns bytes
// as they are written, blocks while none are available, and returns io.EOF
// after Finish(nil) or the error after Finish(err) or Release(err). A reader
// created after Discard returns ErrPass. Close detaches the reader (a
// blocked Read returns) without affecting the fetch.
func (f *Flight) NewReader() io.ReadCloser {
	r := &flightReader{f: f}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.discard {
		r.err = ErrPass
		return r
	}
	f.readers[r] = struct{}{}
	return r
}

// Reader is NewReader for callers that must know before committing a
// response whether the body will be shared: it returns ErrPass (and no
// reader) when the flight was discarded before the reader could attach,
// typically because the body outgrew the object size limit between Wait
// and now. Any reader it returns streams the whole body.
func (f *Flight) Reader() (io.ReadCloser, error) {
	r := f.NewReader()
	if fr := r.(*flightReader); fr.err != nil {
		return nil, fr.err
	}
	return r, nil
}

// flightReader reads a Flight's body. Not safe for concurrent Reads.
type flightReader struct {
	f      *Flight
	off    atomic.Int64 // next body offset; written by Read, read by the writer
	err    error        // terminal error for a reader that never attached
	closed bool         // guarded by f.mu
	chunk  int          // absolute index of the chunk holding off; guarded by f.mu
	start  int64        // body offset of that chunk; guarded by f.mu
}

func (r *flightReader) Read(p []byte) (int, error) {
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
func (r *flightReader) slice(off int64) []byte {
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
func (r *flightReader) Close() error {
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
