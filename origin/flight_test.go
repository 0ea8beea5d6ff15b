package origin

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
)

// pattern returns n deterministic bytes starting at body offset off. The
// sequence has period 251 (prime, so no chunk size aligns with it); the
// first period is computed and then doubled with copy, which keeps large
// patterns cheap under the race detector.
func pattern(off, n int) []byte {
	b := make([]byte, n)
	for i := range min(n, 251) {
		b[i] = byte((off + i) * 7 % 251)
	}
	for filled := 251; filled < n; filled *= 2 {
		copy(b[filled:], b[:filled])
	}
	return b
}

// testFlight returns a flight driven by hand, for the body buffer's tests
// (the lifecycle is Group.Do's, tested through Do).
func testFlight() (*Group[string], *Flight[string]) {
	g := NewGroup(GroupConfig[string]{})
	f := newFlight(g, "k")
	g.m["k"] = f
	return g, f
}

// Head is a shorthand for the tests.
type head = Head[string]

func TestPattern(t *testing.T) {
	for _, tt := range []struct{ off, n int }{{0, 0}, {0, 10}, {3, 251}, {1000, 5000}, {7, 1 << 16}} {
		b := pattern(tt.off, tt.n)
		for i := range b {
			if want := byte((tt.off + i) * 7 % 251); b[i] != want {
				t.Fatalf("pattern(%d, %d)[%d]: got %d, want %d", tt.off, tt.n, i, b[i], want)
			}
		}
	}
}

// retained returns the body bytes the flight currently keeps in memory.
func (f *Flight[M]) retained() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.chunks {
		n += cap(c)
	}
	return n
}

// TestFlightFanout: 200 requesters call Do for one key; exactly one fetch
// runs; every caller, the leader included, gets identical bytes in order,
// and sees the first bytes before the fetch finishes (streaming, not
// store-and-forward: otherwise the bubble deadlocks and the test fails);
// Keep gets the whole body before the flight leaves the group.
func TestFlightFanout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 200
		var want []byte
		var pieces [][]byte
		for i, off := 0, 0; i < 64; i++ {
			p := pattern(off, 1000+i*37)
			pieces = append(pieces, p)
			want = append(want, p...)
			off += len(p)
		}
		var (
			fetches, leaders atomic.Int32
			firstSeen, wg    sync.WaitGroup
			kept             atomic.Pointer[[]byte]
		)
		g := NewGroup(GroupConfig[string]{Keep: func(m string, b []byte) {
			if m == "entry" {
				kept.Store(&b)
			}
		}})
		fetch := func(ctx context.Context, w *Writer[string]) error {
			fetches.Add(1)
			w.Publish(head{Status: 200, ContentLength: int64(len(want)), Header: []Field{{"X", "y"}}, Meta: "entry"})
			w.Write(pieces[0])
			firstSeen.Wait()
			for _, p := range pieces[1:] {
				w.Write(p)
			}
			return nil
		}
		firstSeen.Add(n)
		results := make([][]byte, n)
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				c := g.Do("k", fetch)
				if c.Leader() {
					leaders.Add(1)
				}
				h, err := c.Wait(context.Background())
				if err != nil || h.Status != 200 || h.Meta != "entry" {
					t.Errorf("Wait: got %+v, %v; want status 200", h, err)
				}
				r, err := c.Reader()
				if err != nil {
					t.Errorf("Reader: %v", err)
					firstSeen.Done()
					return
				}
				defer r.Close()
				buf := make([]byte, 700)
				m, err := r.Read(buf)
				if m == 0 || err != nil {
					t.Errorf("first Read: got %d, %v; want bytes", m, err)
				}
				firstSeen.Done()
				rest, err := io.ReadAll(r)
				if err != nil {
					t.Errorf("ReadAll: %v", err)
				}
				results[i] = append(buf[:m:m], rest...)
			})
		}
		close(start)
		wg.Wait()
		synctest.Wait() // the fetch goroutine has kept and left
		if got, got2 := leaders.Load(), fetches.Load(); got != 1 || got2 != 1 {
			t.Fatalf("leaders, fetches: got %d, %d, want 1, 1", got, got2)
		}
		for i, r := range results {
			if !bytes.Equal(r, want) {
				t.Fatalf("reader %d: got %d bytes, want %d identical bytes", i, len(r), len(want))
			}
		}
		if got := g.Len(); got != 0 {
			t.Errorf("Len after the fetch: got %d, want 0", got)
		}
		if b := kept.Load(); b == nil || !bytes.Equal(*b, want) {
			t.Errorf("Keep: got %v, want the %d-byte body", b != nil, len(want))
		}
	})
}

// TestFlightErrorWakesWaiters: a fetch that fails before publishing ends
// every Wait with its error, and the key leaves the group at once.
func TestFlightErrorWakesWaiters(t *testing.T) {
	errOrigin := errors.New("origin refused")
	tests := []struct {
		name string
		ret  error
		want error
	}{
		{"pass", ErrPass, ErrPass},
		{"nil without head means pass", nil, ErrPass},
		{"origin error", errOrigin, errOrigin},
		{"panic", nil, errPanic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				release := make(chan struct{})
				panics := make(chan any, 1)
				g := NewGroup(GroupConfig[string]{Go: func(fn func()) bool {
					go func() {
						defer func() { panics <- recover() }()
						fn()
					}()
					return true
				}})
				fetch := func(context.Context, *Writer[string]) error {
					<-release
					if tt.want == errPanic {
						panic("boom")
					}
					return tt.ret
				}
				lead := g.Do("k", fetch)
				errs := make(chan error, 11)
				for i := range 11 {
					c := lead
					if i > 0 {
						if c = g.Do("k", fetch); c.Leader() {
							t.Fatalf("Do: got a second leader, want a waiter")
						}
					}
					go func() {
						_, err := c.Wait(context.Background())
						errs <- err
					}()
				}
				synctest.Wait() // every caller is blocked in Wait
				close(release)
				for range 11 {
					if err := <-errs; !errors.Is(err, tt.want) {
						t.Errorf("Wait: got %v, want %v", err, tt.want)
					}
				}
				if p := <-panics; (p != nil) != (tt.want == errPanic) {
					t.Errorf("panic given to Go's owner: got %v, want one only for a panicking fetch", p)
				}
				if c := g.Do("k", func(context.Context, *Writer[string]) error { return nil }); !c.Leader() {
					t.Errorf("Do after the failure: got waiter, want a new leader")
				}
			})
		})
	}
}

func TestFlightFinishError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := NewGroup(GroupConfig[string]{Keep: func(string, []byte) { t.Errorf("Keep of a failed body") }})
		boom := errors.New("upstream reset")
		c := g.Do("k", func(_ context.Context, w *Writer[string]) error {
			w.Publish(head{Status: 200, ContentLength: -1})
			w.Write([]byte("partial"))
			return boom
		})
		if _, err := c.Wait(context.Background()); err != nil {
			t.Fatalf("Wait: %v", err)
		}
		r, err := c.Reader()
		if err != nil {
			t.Fatalf("Reader: %v", err)
		}
		b, err := io.ReadAll(r)
		if string(b) != "partial" || !errors.Is(err, boom) {
			t.Errorf("body: got %q, %v; want %q, %v", b, err, "partial", boom)
		}
		if _, ok := c.Bytes(); ok {
			t.Errorf("Bytes after a failed fetch: got ok, want not ok")
		}
		synctest.Wait()
		if c := g.Do("k", func(context.Context, *Writer[string]) error { return nil }); !c.Leader() {
			t.Errorf("Do after a failed fetch: got waiter, want a new leader")
		}
	})
}

// TestFlightPrivate: a private head goes to the leader alone; waiters get
// ErrPass; a leader that gave up waiting has it dropped.
func TestFlightPrivate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := NewGroup(GroupConfig[string]{Keep: func(string, []byte) { t.Errorf("Keep of a private flight") }})
		release := make(chan struct{})
		dropped := make(chan string, 1)
		fetch := func(_ context.Context, w *Writer[string]) error {
			<-release
			w.Private(head{Status: 200, Meta: "mine"}, func(m string) { dropped <- m })
			return nil
		}
		lead, wait := g.Do("k", fetch), g.Do("k", fetch)
		close(release)
		if h, err := lead.Wait(context.Background()); err != nil || h.Meta != "mine" {
			t.Errorf("leader Wait: got %+v, %v; want the private head", h, err)
		}
		if _, err := wait.Wait(context.Background()); !errors.Is(err, ErrPass) {
			t.Errorf("waiter Wait: got %v, want ErrPass", err)
		}
		synctest.Wait()
		if len(dropped) != 0 {
			t.Errorf("drop called for a head the leader took")
		}
		// The leader goes away before the private head is ready.
		release2 := make(chan struct{})
		gone := g.Do("k", func(_ context.Context, w *Writer[string]) error {
			<-release2
			w.Private(head{Status: 200, Meta: "orphan"}, func(m string) { dropped <- m })
			return nil
		})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := gone.Wait(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("leader Wait with a done ctx: got %v, want context.Canceled", err)
		}
		close(release2)
		if m := <-dropped; m != "orphan" {
			t.Errorf("dropped: got %q, want %q", m, "orphan")
		}
	})
}

// TestFlightCompletedStaysJoinable: a complete flight stays joinable until
// Keep returns: late requesters get the head and the whole body.
func TestFlightCompletedStaysJoinable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inKeep, leave := make(chan struct{}), make(chan struct{})
		g := NewGroup(GroupConfig[string]{Keep: func(string, []byte) { close(inKeep); <-leave }})
		fetch := func(_ context.Context, w *Writer[string]) error {
			w.Publish(head{Status: 200, ContentLength: 5, Meta: "entry"})
			_, err := w.Write([]byte("hello"))
			return err
		}
		g.Do("k", fetch)
		<-inKeep
		late := g.Do("k", fetch)
		if late.Leader() {
			t.Fatalf("Do during Keep: got leader, want the finished flight")
		}
		h, err := late.Wait(context.Background())
		if err != nil || h.Meta != "entry" {
			t.Fatalf("Wait: got %+v, %v; want Meta %q", h, err, "entry")
		}
		r, _ := late.Reader()
		if b, err := io.ReadAll(r); err != nil || string(b) != "hello" {
			t.Errorf("late reader: got %q, %v; want %q", b, err, "hello")
		}
		close(leave)
		synctest.Wait()
		if got := g.Len(); got != 0 {
			t.Errorf("Len after Keep: got %d, want 0", got)
		}
	})
}

func TestFlightWaitContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		g := NewGroup(GroupConfig[string]{})
		fetch := func(_ context.Context, w *Writer[string]) error {
			<-release
			w.Publish(head{Status: 204})
			return nil
		}
		lead := g.Do("k", fetch)
		w := g.Do("k", fetch)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() {
			_, err := w.Wait(ctx)
			done <- err
		}()
		synctest.Wait()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Wait: got %v, want context.Canceled", err)
		}
		close(release) // the flight goes on for the others
		if h, err := lead.Wait(context.Background()); err != nil || h.Status != 204 {
			t.Errorf("Wait after a waiter left: got %+v, %v; want 204", h, err)
		}
	})
}

// TestGroupClosed: a group whose Go refuses work ends new flights with
// ErrClosed instead of starting them, and tells the leader (Refused) so it
// releases what the fetch would have; Abort ends running ones.
func TestGroupClosed(t *testing.T) {
	g := NewGroup(GroupConfig[string]{Go: func(func()) bool { return false }})
	c := g.Do("k", func(context.Context, *Writer[string]) error { t.Error("fetch ran"); return nil })
	if _, err := c.Wait(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Wait: got %v, want ErrClosed", err)
	}
	if !c.Leader() || !c.Refused() {
		t.Errorf("Leader, Refused: got %v, %v, want true, true", c.Leader(), c.Refused())
	}
	if started := NewGroup(GroupConfig[string]{}).Do("k", func(context.Context, *Writer[string]) error { return nil }); started.Refused() {
		t.Errorf("Refused of a started flight: got true, want false")
	}
	synctest.Test(t, func(t *testing.T) {
		g := NewGroup(GroupConfig[string]{})
		werr := make(chan error, 1)
		c := g.Do("k", func(_ context.Context, w *Writer[string]) error {
			w.Publish(head{Status: 200, ContentLength: -1})
			w.Discard(1) // the write below blocks on its reader
			w.Write(make([]byte, 64))
			_, err := w.Write(make([]byte, 64)) // blocks: the reader reads nothing
			werr <- err
			return err
		})
		r, err := c.Reader() // attached before the fetch discards
		c.Wait(context.Background())
		if err != nil {
			t.Fatalf("Reader: %v", err)
		}
		defer r.Close()
		synctest.Wait()
		stop := errors.New("stop")
		g.Abort(stop)
		if err := <-werr; err == nil {
			t.Errorf("Write after Abort: got nil, want an error")
		}
	})
}

func TestFlightWriteCopies(t *testing.T) {
	g, f := testFlight()
	f.publish(head{Status: 200, ContentLength: -1}, false)
	p := []byte("abc")
	f.write(p)
	copy(p, "xyz")
	f.finish(nil)
	if b, _ := f.Bytes(); string(b) != "abc" {
		t.Errorf("Bytes: got %q, want %q (Write must copy)", b, "abc")
	}
	g.forget(f)
}

func TestFlightBytes(t *testing.T) {
	tests := []struct {
		name  string
		cl    int64 // announced Content-Length
		sizes []int // Write sizes
	}{
		{"empty", 0, nil},
		{"small known length", 10, []int{10}},
		{"small unknown length", -1, []int{3, 4}},
		{"multi chunk unknown length", -1, []int{100 << 10, 3 << 20, 1}},
		{"exact chunk known length", 5<<20 + 7, []int{5 << 20, 7}},
		{"multi chunk known length", 9 << 20, []int{4 << 20, 5 << 20}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, f := testFlight()
			f.publish(head{Status: 200, ContentLength: tt.cl}, false)
			var want []byte
			for _, n := range tt.sizes {
				p := pattern(len(want), n)
				f.write(p)
				want = append(want, p...)
			}
			if _, ok := f.Bytes(); ok {
				t.Errorf("Bytes before Finish: got ok, want not ok")
			}
			f.finish(nil)
			b, ok := f.Bytes()
			if !ok || !bytes.Equal(b, want) {
				t.Fatalf("Bytes: got %d bytes, %v; want %d, true", len(b), ok, len(want))
			}
			if cap(b) > len(b)+len(b)/8+8 {
				t.Errorf("Bytes capacity: got %d for %d bytes, want a tight slice", cap(b), len(b))
			}
		})
	}
}

// TestFlightBytesWhileReading: building the contiguous copy for Bytes
// while a reader is half-way through a multi-chunk body does not disturb it,
// and the chunks are released in favour of the copy.
func TestFlightBytesWhileReading(t *testing.T) {
	g, f := testFlight()
	f.publish(head{Status: 200, ContentLength: -1}, false)
	want := pattern(0, 3<<20+123)
	r := f.newReader()
	for off := 0; off < len(want); off += 100 << 10 {
		f.write(want[off:min(off+100<<10, len(want))])
	}
	f.finish(nil)
	half := make([]byte, 1<<20+77)
	if _, err := io.ReadFull(r, half); err != nil {
		t.Fatalf("ReadFull: %v", err)
	}
	b, ok := f.Bytes()
	if !ok || !bytes.Equal(b, want) {
		t.Fatalf("Bytes: got %d bytes, %v; want %d, true", len(b), ok, len(want))
	}
	if got := f.retained(); got != len(want) {
		t.Errorf("retained after Bytes: got %d, want %d (one contiguous copy)", got, len(want))
	}
	rest, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(append(half, rest...), want) {
		t.Errorf("reader across Bytes: got %d bytes, %v; want %d identical", len(half)+len(rest), err, len(want))
	}
	if late, err := (Call[string]{f: f}).Reader(); err != nil {
		t.Errorf("Reader after Finish: %v", err)
	} else if b, err := io.ReadAll(late); err != nil || !bytes.Equal(b, want) {
		t.Errorf("late reader: got %d bytes, %v; want %d", len(b), err, len(want))
	}
	g.forget(f)
}

// TestFlightDiscardBoundsMemory streams 64 MiB through a discarding flight
// to a reader that consumes in small bites: memory stays near the window
// and the reader gets every byte in order.
func TestFlightDiscardBoundsMemory(t *testing.T) {
	const (
		size   = 64 << 20
		window = 1 << 20
		piece  = 64 << 10
	)
	_, f := testFlight()
	f.publish(head{Status: 200, ContentLength: -1}, false)
	r := f.newReader()
	f.discardBody(window)
	readErr := make(chan error, 1)
	go func() {
		defer r.Close()
		buf := make([]byte, 4<<10)
		off := 0
		for {
			n, err := r.Read(buf)
			if !bytes.Equal(buf[:n], pattern(off, n)) {
				readErr <- errors.New("reader got bytes out of order")
				return
			}
			off += n
			switch {
			case err == io.EOF && off != size:
				readErr <- errors.New("short body")
				return
			case err == io.EOF:
				readErr <- nil
				return
			case err != nil:
				readErr <- err
				return
			}
		}
	}()
	peak := 0
	for off := 0; off < size; off += piece {
		if _, err := f.write(pattern(off, piece)); err != nil {
			t.Fatalf("Write at %d: %v", off, err)
		}
		peak = max(peak, f.retained())
	}
	f.finish(nil)
	if err := <-readErr; err != nil {
		t.Fatalf("reader: %v", err)
	}
	if limit := window + 2*piece + maxChunk; peak > limit {
		t.Errorf("peak retained bytes: got %d, want <= %d (window %d)", peak, limit, window)
	}
	if _, ok := f.Bytes(); ok {
		t.Errorf("Bytes after Discard: got ok, want not ok")
	}
}

// TestFlightDiscardBackpressure: a discarding flight's Write blocks while
// the slowest reader is more than the window behind, resumes when it reads,
// and is released at once when the reader detaches.
func TestFlightDiscardBackpressure(t *testing.T) {
	const (
		window = 256 << 10
		piece  = 64 << 10
		total  = 4 << 20
	)
	for _, mode := range []string{"reader catches up", "reader closes"} {
		t.Run(mode, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				_, f := testFlight()
				f.publish(head{Status: 200, ContentLength: -1}, false)
				r := f.newReader()
				f.discardBody(window)
				var written atomic.Int64
				done := make(chan struct{})
				go func() {
					defer close(done)
					for off := 0; off < total; off += piece {
						_, err := f.write(pattern(off, piece))
						if errors.Is(err, ErrNoReaders) && mode == "reader closes" {
							f.finish(err) // nobody left: stop fetching
							return
						}
						if err != nil {
							t.Errorf("Write: %v", err)
							return
						}
						written.Add(piece)
					}
					f.finish(nil)
				}()
				synctest.Wait() // the writer is blocked: nobody reads
				if got := written.Load(); got > window+piece {
					t.Fatalf("written before blocking: got %d, want <= %d", got, window+piece)
				}
				select {
				case <-done:
					t.Fatal("writer finished without a reader reading: want it blocked")
				default:
				}
				switch mode {
				case "reader catches up":
					b, err := io.ReadAll(r)
					if err != nil || len(b) != total || !bytes.Equal(b, pattern(0, total)) {
						t.Fatalf("ReadAll: got %d bytes, %v; want %d in order", len(b), err, total)
					}
					r.Close()
				case "reader closes":
					r.Close()
				}
				<-done
				if mode == "reader closes" {
					if _, err := f.write([]byte("x")); !errors.Is(err, ErrNoReaders) && !errors.Is(err, errFlightDone) {
						t.Errorf("Write with no reader left: got %v, want ErrNoReaders", err)
					}
				}
			})
		})
	}
}

func TestFlightDiscardWithoutReaders(t *testing.T) {
	_, f := testFlight()
	f.publish(head{Status: 200, ContentLength: -1}, false)
	f.discardBody(1 << 20) // the leader's own client already went away
	if _, err := f.write([]byte("abc")); !errors.Is(err, ErrNoReaders) {
		t.Errorf("Write: got %v, want ErrNoReaders", err)
	}
	f.finish(ErrNoReaders)
}

func TestFlightDiscardLateReader(t *testing.T) {
	g, f := testFlight()
	w := g.Do("k", nil) // joined before Discard, attaches after
	f.publish(head{Status: 200, ContentLength: -1}, false)
	f.write([]byte("abc"))
	f.discardBody(1 << 20)
	if _, err := f.newReader().Read(make([]byte, 8)); !errors.Is(err, ErrPass) {
		t.Errorf("Read of a reader created after Discard: got %v, want ErrPass", err)
	}
	if r, err := w.Reader(); r != nil || !errors.Is(err, ErrPass) {
		t.Errorf("Reader after Discard: got %v, %v; want nil, ErrPass", r, err)
	}
	if g.Len() != 0 {
		t.Errorf("Len after Discard: got %d, want 0 (new requests fetch on their own)", g.Len())
	}
	f.finish(nil)
}

func TestFlightReaderCloseUnblocksRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, f := testFlight()
		f.publish(head{Status: 200, ContentLength: -1}, false)
		r := f.newReader()
		done := make(chan error)
		go func() {
			_, err := r.Read(make([]byte, 8))
			done <- err
		}()
		synctest.Wait() // Read is blocked: no bytes yet
		r.Close()
		if err := <-done; err == nil {
			t.Errorf("Read after Close: got nil error, want one")
		}
		r.Close() // idempotent
		// The fetch is unaffected.
		if _, err := f.write([]byte("x")); err != nil {
			t.Errorf("Write after a reader closed: %v", err)
		}
		f.finish(nil)
		g.forget(f)
	})
}

// TestFlightHotPathAllocs: once a chunk exists, Write into it and Read from
// it allocate nothing.
func TestFlightHotPathAllocs(t *testing.T) {
	g, f := testFlight()
	f.publish(head{Status: 200, ContentLength: 1 << 20}, false)
	r := f.newReader()
	defer r.Close()
	p := pattern(0, 512)
	buf := make([]byte, 512)
	allocs := testing.AllocsPerRun(1000, func() {
		f.write(p)
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("allocations per Write+Read: got %v, want 0", allocs)
	}
	f.finish(nil)
	g.forget(f)
}

func BenchmarkFlightFanout(b *testing.B) {
	const (
		readers = 64
		size    = 1 << 20
		piece   = 32 << 10
	)
	body := pattern(0, size)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		g, f := testFlight()
		var wg sync.WaitGroup
		for range readers {
			r := g.Do("k", nil).f.newReader()
			wg.Go(func() {
				buf := make([]byte, piece)
				for {
					if _, err := r.Read(buf); err != nil {
						break
					}
				}
				r.Close()
			})
		}
		f.publish(head{Status: 200, ContentLength: size}, false)
		for off := 0; off < size; off += piece {
			f.write(body[off : off+piece])
		}
		f.finish(nil)
		g.forget(f)
		wg.Wait()
	}
}
