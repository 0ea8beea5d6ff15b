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
func (f *Flight) retained() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.chunks {
		n += cap(c)
	}
	return n
}

// TestFlightFanout: 200 requesters join one key; exactly one leads; every
// reader, the leader's own included, gets identical bytes in order, and
// sees the first bytes before the leader finishes (streaming, not
// store-and-forward: otherwise the bubble deadlocks and the test fails).
func TestFlightFanout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 200
		g := NewGroup()
		var want []byte
		var pieces [][]byte
		for i, off := 0, 0; i < 64; i++ {
			p := pattern(off, 1000+i*37)
			pieces = append(pieces, p)
			want = append(want, p...)
			off += len(p)
		}
		var (
			leaders   atomic.Int32
			firstSeen sync.WaitGroup
			wg        sync.WaitGroup
			flight    atomic.Pointer[Flight]
		)
		firstSeen.Add(n)
		results := make([][]byte, n)
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				f, leader := g.Join("k")
				if leader {
					leaders.Add(1)
					flight.Store(f)
					wg.Go(func() {
						f.Publish(Head{Status: 200, ContentLength: int64(len(want)), Header: []Field{{"X", "y"}}})
						f.Write(pieces[0])
						firstSeen.Wait()
						for _, p := range pieces[1:] {
							f.Write(p)
						}
						f.Finish(nil)
						g.Forget("k", f)
					})
				}
				head, err := f.Wait(context.Background())
				if err != nil || head.Status != 200 {
					t.Errorf("Wait: got %+v, %v; want status 200", head, err)
				}
				r := f.NewReader()
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
		if got := leaders.Load(); got != 1 {
			t.Fatalf("leaders: got %d, want 1", got)
		}
		for i, r := range results {
			if !bytes.Equal(r, want) {
				t.Fatalf("reader %d: got %d bytes, want %d identical bytes", i, len(r), len(want))
			}
		}
		if got := flight.Load().Waiters(); got != n-1 {
			t.Errorf("Waiters: got %d, want %d", got, n-1)
		}
		if got := g.Len(); got != 0 {
			t.Errorf("Len after Forget: got %d, want 0", got)
		}
		if b, ok := flight.Load().Bytes(); !ok || !bytes.Equal(b, want) {
			t.Errorf("Bytes: got %d bytes, %v; want %d, true", len(b), ok, len(want))
		}
	})
}

func TestFlightReleaseWakesWaiters(t *testing.T) {
	errOrigin := errors.New("origin refused")
	tests := []struct {
		name    string
		release error
		want    error
	}{
		{"pass", ErrPass, ErrPass},
		{"nil means pass", nil, ErrPass},
		{"origin error", errOrigin, errOrigin},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g := NewGroup()
				f, _ := g.Join("k")
				errs := make(chan error, 10)
				for range 10 {
					w, leader := g.Join("k")
					if leader || w != f {
						t.Fatalf("Join: got leader=%v, same flight=%v; want a waiter on the same flight", leader, w == f)
					}
					go func() {
						_, err := w.Wait(context.Background())
						errs <- err
					}()
				}
				synctest.Wait() // every waiter is blocked in Wait
				f.Release(tt.release)
				for range 10 {
					if err := <-errs; !errors.Is(err, tt.want) {
						t.Errorf("Wait: got %v, want %v", err, tt.want)
					}
				}
				if _, leader := g.Join("k"); !leader {
					t.Errorf("Join after Release: got waiter, want a new leader")
				}
				if _, err := f.NewReader().Read(make([]byte, 1)); !errors.Is(err, tt.want) {
					t.Errorf("Read after Release: got %v, want %v", err, tt.want)
				}
			})
		})
	}
}

func TestFlightFinishError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := NewGroup()
		f, _ := g.Join("k")
		r := f.NewReader()
		got := make(chan []byte)
		gotErr := make(chan error)
		go func() {
			b, err := io.ReadAll(r)
			got <- b
			gotErr <- err
		}()
		boom := errors.New("upstream reset")
		f.Publish(Head{Status: 200, ContentLength: -1})
		f.Write([]byte("partial"))
		f.Finish(boom)
		if b := <-got; string(b) != "partial" {
			t.Errorf("body: got %q, want %q", b, "partial")
		}
		if err := <-gotErr; !errors.Is(err, boom) {
			t.Errorf("Read error: got %v, want %v", err, boom)
		}
		if _, ok := f.Bytes(); ok {
			t.Errorf("Bytes after Finish(err): got ok, want not ok")
		}
		if _, leader := g.Join("k"); !leader {
			t.Errorf("Join after Finish(err): got waiter, want a new leader")
		}
		if _, err := f.Write([]byte("x")); err == nil {
			t.Errorf("Write after Finish: got nil error, want one")
		}
	})
}

func TestFlightFinishWithoutHead(t *testing.T) {
	g := NewGroup()
	f, _ := g.Join("k")
	f.Finish(nil)
	if _, err := f.Wait(context.Background()); !errors.Is(err, ErrPass) {
		t.Errorf("Wait: got %v, want ErrPass", err)
	}
	g.Forget("k", f)
}

// TestFlightCompletedStaysJoinable: after Finish(nil) and before Forget,
// late requesters join the finished flight and read the whole body.
func TestFlightCompletedStaysJoinable(t *testing.T) {
	g := NewGroup()
	f, _ := g.Join("k")
	f.Publish(Head{Status: 200, ContentLength: 5, Meta: "entry"})
	f.Write([]byte("hello"))
	f.Finish(nil)
	late, leader := g.Join("k")
	if leader || late != f {
		t.Fatalf("Join after Finish(nil): got leader=%v, want the finished flight", leader)
	}
	head, err := late.Wait(context.Background())
	if err != nil || head.Meta != "entry" {
		t.Fatalf("Wait: got %+v, %v; want Meta %q", head, err, "entry")
	}
	if b, err := io.ReadAll(late.NewReader()); err != nil || string(b) != "hello" {
		t.Errorf("late reader: got %q, %v; want %q", b, err, "hello")
	}
	g.Forget("k", f)
	if _, leader := g.Join("k"); !leader {
		t.Errorf("Join after Forget: got waiter, want a new leader")
	}
	// Forget of a stale flight leaves the newer one alone.
	g.Forget("k", f)
	if got := g.Len(); got != 1 {
		t.Errorf("Len after stale Forget: got %d, want 1", got)
	}
}

func TestFlightWaitContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := NewGroup()
		f, _ := g.Join("k")
		w, _ := g.Join("k")
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
		// The flight goes on for the others.
		f.Publish(Head{Status: 204})
		if h, err := f.Wait(context.Background()); err != nil || h.Status != 204 {
			t.Errorf("Wait after a waiter left: got %+v, %v; want 204", h, err)
		}
		f.Finish(nil)
		g.Forget("k", f)
	})
}

func TestFlightWriteCopies(t *testing.T) {
	g := NewGroup()
	f, _ := g.Join("k")
	f.Publish(Head{Status: 200, ContentLength: -1})
	p := []byte("abc")
	f.Write(p)
	copy(p, "xyz")
	f.Finish(nil)
	if b, _ := f.Bytes(); string(b) != "abc" {
		t.Errorf("Bytes: got %q, want %q (Write must copy)", b, "abc")
	}
	g.Forget("k", f)
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
			g := NewGroup()
			f, _ := g.Join("k")
			f.Publish(Head{Status: 200, ContentLength: tt.cl})
			var want []byte
			for _, n := range tt.sizes {
				p := pattern(len(want), n)
				f.Write(p)
				want = append(want, p...)
			}
			if _, ok := f.Bytes(); ok {
				t.Errorf("Bytes before Finish: got ok, want not ok")
			}
			f.Finish(nil)
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
	g := NewGroup()
	f, _ := g.Join("k")
	f.Publish(Head{Status: 200, ContentLength: -1})
	want := pattern(0, 3<<20+123)
	r := f.NewReader()
	for off := 0; off < len(want); off += 100 << 10 {
		f.Write(want[off:min(off+100<<10, len(want))])
	}
	f.Finish(nil)
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
	if late, err := f.Reader(); err != nil {
		t.Errorf("Reader after Finish: %v", err)
	} else if b, err := io.ReadAll(late); err != nil || !bytes.Equal(b, want) {
		t.Errorf("late reader: got %d bytes, %v; want %d", len(b), err, len(want))
	}
	g.Forget("k", f)
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
	g := NewGroup()
	f, _ := g.Join("k")
	f.Publish(Head{Status: 200, ContentLength: -1})
	r := f.NewReader()
	f.Discard(window)
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
		if _, err := f.Write(pattern(off, piece)); err != nil {
			t.Fatalf("Write at %d: %v", off, err)
		}
		peak = max(peak, f.retained())
	}
	f.Finish(nil)
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
				g := NewGroup()
				f, _ := g.Join("k")
				f.Publish(Head{Status: 200, ContentLength: -1})
				r := f.NewReader()
				f.Discard(window)
				var written atomic.Int64
				done := make(chan struct{})
				go func() {
					defer close(done)
					for off := 0; off < total; off += piece {
						_, err := f.Write(pattern(off, piece))
						if errors.Is(err, ErrNoReaders) && mode == "reader closes" {
							f.Finish(err) // nobody left: stop fetching
							return
						}
						if err != nil {
							t.Errorf("Write: %v", err)
							return
						}
						written.Add(piece)
					}
					f.Finish(nil)
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
					if _, err := f.Write([]byte("x")); !errors.Is(err, ErrNoReaders) && !errors.Is(err, errFlightDone) {
						t.Errorf("Write with no reader left: got %v, want ErrNoReaders", err)
					}
				}
			})
		})
	}
}

func TestFlightDiscardWithoutReaders(t *testing.T) {
	g := NewGroup()
	f, _ := g.Join("k")
	f.Publish(Head{Status: 200, ContentLength: -1})
	f.Discard(1 << 20) // the leader's own client already went away
	if _, err := f.Write([]byte("abc")); !errors.Is(err, ErrNoReaders) {
		t.Errorf("Write: got %v, want ErrNoReaders", err)
	}
	f.Finish(ErrNoReaders)
}

func TestFlightDiscardLateReader(t *testing.T) {
	g := NewGroup()
	f, _ := g.Join("k")
	w, _ := g.Join("k") // joined before Discard, attaches after
	f.Publish(Head{Status: 200, ContentLength: -1})
	f.Write([]byte("abc"))
	f.Discard(1 << 20)
	if _, err := w.NewReader().Read(make([]byte, 8)); !errors.Is(err, ErrPass) {
		t.Errorf("Read of a reader created after Discard: got %v, want ErrPass", err)
	}
	if r, err := w.Reader(); r != nil || !errors.Is(err, ErrPass) {
		t.Errorf("Reader after Discard: got %v, %v; want nil, ErrPass", r, err)
	}
	if _, leader := g.Join("k"); !leader {
		t.Errorf("Join after Discard: got waiter, want a new leader")
	}
	f.Finish(nil)
}

func TestFlightReaderCloseUnblocksRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := NewGroup()
		f, _ := g.Join("k")
		f.Publish(Head{Status: 200, ContentLength: -1})
		r := f.NewReader()
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
		if _, err := f.Write([]byte("x")); err != nil {
			t.Errorf("Write after a reader closed: %v", err)
		}
		f.Finish(nil)
		g.Forget("k", f)
	})
}

// TestFlightHotPathAllocs: once a chunk exists, Write into it and Read from
// it allocate nothing.
func TestFlightHotPathAllocs(t *testing.T) {
	g := NewGroup()
	f, _ := g.Join("k")
	f.Publish(Head{Status: 200, ContentLength: 1 << 20})
	r := f.NewReader()
	defer r.Close()
	p := pattern(0, 512)
	buf := make([]byte, 512)
	allocs := testing.AllocsPerRun(1000, func() {
		f.Write(p)
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("allocations per Write+Read: got %v, want 0", allocs)
	}
	f.Finish(nil)
	g.Forget("k", f)
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
		g := NewGroup()
		f, _ := g.Join("k")
		var wg sync.WaitGroup
		for range readers {
			w, _ := g.Join("k")
			r := w.NewReader()
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
		f.Publish(Head{Status: 200, ContentLength: size})
		for off := 0; off < size; off += piece {
			f.Write(body[off : off+piece])
		}
		f.Finish(nil)
		g.Forget("k", f)
		wg.Wait()
	}
}
