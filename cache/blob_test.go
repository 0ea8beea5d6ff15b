//go:build linux

package cache

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// openMemFiles counts this process's descriptors that are body memory files.
func openMemFiles(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.Contains(l, "memfd:edgeshield-body") {
			n++
		}
	}
	return n
}

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s: no panic", what)
		}
	}()
	f()
}

func TestBlobLifecycle(t *testing.T) {
	before := openMemFiles(t)
	p := NewBlobs(0)
	body := pattern(300 << 10)
	b, err := p.New(body)
	if err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Files != 1 || st.Bytes != int64(len(body)) || b.Size() != int64(len(body)) {
		t.Fatalf("stats %+v size %d, want 1 file of %d bytes", st, b.Size(), len(body))
	}
	if got := openMemFiles(t) - before; got != 1 {
		t.Fatalf("%d memory files open, want 1", got)
	}
	all, err := b.Bytes()
	if err != nil || !bytes.Equal(all, body) {
		t.Fatalf("Bytes: %d bytes, err %v; want the body back", len(all), err)
	}
	buf := make([]byte, 100)
	if n, err := b.ReadAt(buf, 1000); n != 100 || err != nil || !bytes.Equal(buf, body[1000:1100]) {
		t.Errorf("ReadAt(100 @1000) = %d, %v", n, err)
	}
	if n, err := b.ReadAt(buf, int64(len(body))-10); n != 10 || err != io.EOF {
		t.Errorf("ReadAt across the end = %d, %v; want 10, EOF", n, err)
	}
	if n, err := b.ReadAt(buf, int64(len(body))); n != 0 || err != io.EOF {
		t.Errorf("ReadAt at the end = %d, %v; want 0, EOF", n, err)
	}
	// The file is sealed: nothing can change a stored body.
	if _, err := unix.Pwrite(b.file.fd, []byte("x"), 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("write to the sealed file: %v, want EPERM", err)
	}

	// A reader keeps the body after the owner lets go.
	if !b.Acquire() {
		t.Fatal("Acquire on a live blob failed")
	}
	b.Release() // the owner (e.g. the store on eviction)
	if st := p.Stats(); st.Files != 1 {
		t.Fatalf("file closed while a reader holds it: %+v", st)
	}
	if n, err := b.ReadAt(buf, 0); n != 100 || err != nil || !bytes.Equal(buf, body[:100]) {
		t.Fatalf("read after the owner's release: %d, %v", n, err)
	}
	b.Release() // the reader
	if st := p.Stats(); st.Files != 0 || st.Bytes != 0 {
		t.Errorf("after the last release: %+v, want nothing live", st)
	}
	if got := openMemFiles(t) - before; got != 0 {
		t.Errorf("%d memory files still open after the last release", got)
	}
	if b.Acquire() {
		t.Error("Acquire succeeded after the last release")
	}
	mustPanic(t, "Retain after the last release", b.Retain)
	mustPanic(t, "Release more often than acquired", b.Release)
}

func TestBlobFileLimit(t *testing.T) {
	p := NewBlobs(2)
	a, err1 := p.New([]byte("a"))
	b, err2 := p.New([]byte("b"))
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if _, err := p.New([]byte("c")); !errors.Is(err, ErrBlobLimit) {
		t.Fatalf("third blob with a limit of 2: %v, want ErrBlobLimit", err)
	}
	a.Release()
	c, err := p.New([]byte("c"))
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	b.Release()
	c.Release()
	if st := p.Stats(); st.Files != 0 {
		t.Errorf("%+v, want no files", st)
	}
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		done <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-done
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// TestBlobReaderSendfile writes a response head from a bufio.Writer and a
// body range with sendfile, through a send buffer far smaller than the body
// so the kernel pushes back (EAGAIN) many times, and checks every byte.
func TestBlobReaderSendfile(t *testing.T) {
	p := NewBlobs(0)
	body := pattern(4 << 20)
	b, err := p.New(body)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	srv, cli := tcpPair(t)
	if err := srv.(*net.TCPConn).SetWriteBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	const head = "HTTP/1.1 200 OK\r\n\r\n"
	off, n := int64(12345), int64(len(body)-20000)
	got := make(chan []byte, 1)
	go func() {
		all, _ := io.ReadAll(io.LimitReader(cli, int64(len(head))+n))
		got <- all
	}()
	bw := bufio.NewWriter(srv)
	bw.WriteString(head)
	r := b.NewReader(off, n, srv)
	written, err := r.WriteTo(bw)
	if err != nil || written != n {
		t.Fatalf("WriteTo = %d, %v; want %d", written, err, n)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r.Close() // idempotent: must not release twice
	want := append([]byte(head), body[off:off+n]...)
	if all := <-got; !bytes.Equal(all, want) {
		t.Fatalf("client got %d bytes, want %d identical ones", len(all), len(want))
	}
	if st := p.Stats(); st.SendfileBytes != uint64(n) {
		t.Errorf("SendfileBytes = %d, want %d (the sendfile path was not taken)", st.SendfileBytes, n)
	}
}

// TestBlobReaderSendfileDeadline: a client that stops reading makes the
// write fail at the connection's deadline rather than hang.
func TestBlobReaderSendfileDeadline(t *testing.T) {
	p := NewBlobs(0)
	b, err := p.New(pattern(32 << 20))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	srv, _ := tcpPair(t) // the client never reads
	srv.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	r := b.NewReader(0, b.Size(), srv)
	defer r.Close()
	n, err := r.WriteTo(bufio.NewWriter(srv))
	if !errors.Is(err, os.ErrDeadlineExceeded) || n >= b.Size() {
		t.Fatalf("WriteTo to a stalled client = %d, %v; want a deadline error", n, err)
	}
}

// TestBlobReaderCopies: without a plain TCP connection (TLS, a pipe, any
// writer) the reader copies, with the same bytes.
func TestBlobReaderCopies(t *testing.T) {
	p := NewBlobs(0)
	body := pattern(200 << 10)
	b, err := p.New(body)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()

	var buf bytes.Buffer
	r := b.NewReader(10, 150<<10, nil)
	if n, err := r.WriteTo(&buf); err != nil || n != 150<<10 || !bytes.Equal(buf.Bytes(), body[10:10+150<<10]) {
		t.Fatalf("WriteTo(bytes.Buffer) = %d, %v", n, err)
	}
	r.Close()

	pr, pw := net.Pipe()
	got := make(chan []byte, 1)
	go func() { all, _ := io.ReadAll(pr); got <- all }()
	bw := bufio.NewWriter(pw)
	r = b.NewReader(0, b.Size(), pw)
	if _, err := r.WriteTo(bw); err != nil {
		t.Fatal(err)
	}
	bw.Flush()
	pw.Close()
	r.Close()
	if all := <-got; !bytes.Equal(all, body) {
		t.Errorf("over a pipe: %d bytes, want the body", len(all))
	}

	r = b.NewReader(5, 10, nil)
	small := make([]byte, 4)
	var seq []byte
	for {
		n, err := r.Read(small)
		seq = append(seq, small[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	r.Close()
	if !bytes.Equal(seq, body[5:15]) {
		t.Errorf("Read in small steps: %q, want %q", seq, body[5:15])
	}
	if _, err := r.Read(small); err == nil {
		t.Error("Read after Close succeeded")
	}
	if st := p.Stats(); st.SendfileBytes != 0 {
		t.Errorf("SendfileBytes = %d, want 0 without a TCP connection", st.SendfileBytes)
	}
	mustPanic(t, "reader outside the blob", func() { b.NewReader(b.Size()-1, 2, nil) })
}

// TestStoreReleasesBlobs: every way an entry leaves the store (or is never
// admitted) releases its body, and nothing else does.
func TestStoreReleasesBlobs(t *testing.T) {
	p := NewBlobs(0)
	s, err := NewStore(StoreConfig{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	withBlob := func(key string, size int) *Entry {
		e := storeEntry(key, 0)
		e.Body = nil
		b, err := p.New(pattern(size))
		if err != nil {
			t.Fatal(err)
		}
		e.Blob = b
		return e
	}
	live := func() int64 { return p.Stats().Files }
	// set retries a Set that ristretto dropped (its buffer is lossy), each
	// time with a new entry: a dropped Set has already released the body.
	set := func(key string, size int) {
		for range 100 {
			if s.Set(withBlob(key, size)) {
				s.Wait()
				return
			}
		}
		t.Fatalf("Set %s dropped 100 times", key)
	}

	set("a", 100<<10)
	if s.Get([]byte("a")) == nil || live() != 1 {
		t.Fatalf("stored entry: found %v, %d live blobs", s.Get([]byte("a")) != nil, live())
	}
	// Replacement releases the old body.
	set("a", 100<<10)
	if live() != 1 {
		t.Errorf("after replacing a: %d live blobs, want 1", live())
	}
	s.Delete([]byte("a"))
	s.Wait()
	if live() != 0 {
		t.Errorf("after Delete: %d live blobs, want 0", live())
	}
	// Too big for the store: refused at once.
	if s.Set(withBlob("huge", 2<<20)) || live() != 0 {
		t.Errorf("oversized Set: %d live blobs, want 0", live())
	}
	// Filling past MaxBytes evicts (or refuses) and releases as it goes.
	for i := 0; i < 40; i++ {
		set(string(rune('A'+i)), 100<<10)
	}
	if st := s.Stats(); live() != st.Entries || live() > 10 {
		t.Errorf("after overfilling: %d live blobs for %d entries, want equal and at most 10", live(), st.Entries)
	}
	// A reader keeps an evicted body readable.
	var held *Entry
	for i := 0; i < 40 && held == nil; i++ {
		held = s.Get([]byte(string(rune('A' + i))))
	}
	if held == nil || !held.Blob.Acquire() {
		t.Fatal("no resident entry to hold")
	}
	s.Clear()
	if live() != 1 {
		t.Errorf("after Clear with one reader: %d live blobs, want 1", live())
	}
	if _, err := held.Blob.ReadAt(make([]byte, 10), 0); err != nil {
		t.Errorf("held body after Clear: %v", err)
	}
	held.Blob.Release()
	if live() != 0 {
		t.Errorf("after the reader's release: %d live blobs, want 0", live())
	}
	// Close releases what is left.
	set("z", 10<<10)
	s.Close()
	if live() != 0 {
		t.Errorf("after Close: %d live blobs, want 0", live())
	}
	if s.Set(withBlob("late", 10)) || live() != 0 {
		t.Errorf("Set after Close: %d live blobs, want 0", live())
	}
}

func TestWithUpdatedHeadersSharesBlob(t *testing.T) {
	p := NewBlobs(0)
	e := storeEntry("k", 0)
	e.Body = nil
	b, err := p.New(pattern(1000))
	if err != nil {
		t.Fatal(err)
	}
	e.Blob = b
	n := e.WithUpdatedHeaders([]Field{{Name: []byte("X-New"), Value: []byte("1")}}, Freshness{SWR: -1, SIE: -1})
	if n.Blob != b || n.BodyLen() != 1000 {
		t.Fatalf("updated entry: blob shared %v, BodyLen %d", n.Blob == b, n.BodyLen())
	}
	b.Release() // e's reference
	if p.Stats().Files != 1 {
		t.Fatal("the updated entry's reference was not taken")
	}
	n.Blob.Release()
	if p.Stats().Files != 0 {
		t.Error("body still live after both entries let go")
	}
}

// BenchmarkSend1MiB sends a 1 MiB body to a loopback TCP client from a
// memory file with sendfile and from the heap with write. ns/op is the wall
// time of sender and receiver together, and on loopback the receiver's copy
// dominates: it reads sendfile's page-cache pages more slowly than the
// sender's own socket pages, so sendfile shows slower here although it
// costs the sender less CPU (bench/RESULTS.md measures that side).
func BenchmarkSend1MiB(b *testing.B) {
	body := pattern(1 << 20)
	p := NewBlobs(0)
	blob, err := p.New(body)
	if err != nil {
		b.Fatal(err)
	}
	defer blob.Release()
	for _, mode := range []string{"sendfile", "heap-write"} {
		b.Run(mode, func(b *testing.B) {
			srv, cli := tcpPair(b)
			go io.Copy(io.Discard, cli)
			bw := bufio.NewWriter(srv)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if mode == "sendfile" {
					r := blob.NewReader(0, blob.Size(), srv)
					if _, err := r.WriteTo(bw); err != nil {
						b.Fatal(err)
					}
					r.Close()
					continue
				}
				if _, err := bw.Write(body); err != nil {
					b.Fatal(err)
				}
				if err := bw.Flush(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestBlobLeakSafetyNet: a Blob dropped with a reference still held is
// closed by the garbage collector and counted as leaked.
func TestBlobLeakSafetyNet(t *testing.T) {
	p := NewBlobs(0)
	if _, err := p.New(pattern(1000)); err != nil { // never released
		t.Fatal(err)
	}
	for i := 0; i < 50 && p.Stats().Leaked == 0; i++ {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if st := p.Stats(); st.Leaked != 1 || st.Files != 0 || st.Bytes != 0 {
		t.Errorf("after GC: %+v, want 1 leaked and nothing live", st)
	}
}
