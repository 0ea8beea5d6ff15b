package cache

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
)

// Large bodies are kept outside the Go heap, each in an anonymous memory
// file (memfd, Linux), and written to plain TCP clients with sendfile(2)
// straight from those pages: no copy from user space into the socket, and
// no garbage collector work for their bytes. This is what nginx gets from
// sendfile on its cache files; for a 1 MiB hit the copy was about half of
// the edge's CPU time (bench/RESULTS.md).
//
// A Blob is reference counted. Each Entry holding it owns one reference
// (the Store releases it when the entry leaves the store), and every reader
// takes one for as long as it reads, so an entry evicted or purged while a
// client is still downloading it keeps its bytes until that client is done.
// The file is closed, and its memory returned to the kernel, when the last
// reference is released.

// ErrBlobUnsupported is returned by Blobs.New where memory files do not
// exist (not Linux); callers keep such bodies on the heap.
var ErrBlobUnsupported = errors.New("cache: off-heap bodies need Linux memfd")

// ErrBlobLimit is returned by Blobs.New when the open-file budget for
// bodies is used up; callers keep such bodies on the heap.
var ErrBlobLimit = errors.New("cache: off-heap body file limit reached")

// Blobs creates Blobs and accounts for them. It is safe for concurrent use.
type Blobs struct {
	maxFiles int64
	files    atomic.Int64  // open memory files
	bytes    atomic.Int64  // their total size
	sent     atomic.Uint64 // bytes written to sockets with sendfile
	leaked   atomic.Uint64 // files closed by the garbage collector, see New
}

// NewBlobs returns a Blobs that keeps at most maxFiles memory files open
// (each Blob is one file descriptor); maxFiles <= 0 means no limit.
func NewBlobs(maxFiles int) *Blobs {
	return &Blobs{maxFiles: int64(maxFiles)}
}

// BlobStats is a snapshot of Blobs counters.
type BlobStats struct {
	Files, Bytes  int64  // live Blobs (open memory files) and their total size
	SendfileBytes uint64 // body bytes written with sendfile so far
	// Leaked counts Blobs whose last reference was never released (a bug)
	// and that the garbage collector closed instead.
	Leaked uint64
}

// Stats returns the counters.
func (p *Blobs) Stats() BlobStats {
	return BlobStats{Files: p.files.Load(), Bytes: p.bytes.Load(), SendfileBytes: p.sent.Load(), Leaked: p.leaked.Load()}
}

// New copies body into a new memory file and returns its Blob holding one
// reference, which the caller owns.
func (p *Blobs) New(body []byte) (*Blob, error) {
	if n := p.files.Add(1); p.maxFiles > 0 && n > p.maxFiles {
		p.files.Add(-1)
		return nil, ErrBlobLimit
	}
	fd, err := newMemFile(body)
	if err != nil {
		p.files.Add(-1)
		return nil, err
	}
	b := &Blob{file: &blobFile{fd: fd, size: int64(len(body)), pool: p}}
	b.refs.Store(1)
	p.bytes.Add(b.file.size)
	// A safety net, not the mechanism: if a reference is ever leaked (a
	// reader dropped without Close), the file still closes once nothing
	// points at the Blob, and Stats counts it as Leaked.
	runtime.AddCleanup(b, (*blobFile).collected, b.file)
	return b, nil
}

// blobFile is the descriptor, shared by the Blob and its cleanup so that
// exactly one of them closes it and updates the counters.
type blobFile struct {
	fd     int
	closed atomic.Bool
	size   int64
	pool   *Blobs
}

// close closes the file and uncounts it, once.
func (f *blobFile) close() bool {
	if !f.closed.CompareAndSwap(false, true) {
		return false
	}
	_ = syscall.Close(f.fd)
	f.pool.files.Add(-1)
	f.pool.bytes.Add(-f.size)
	return true
}

func (f *blobFile) collected() {
	if f.close() {
		f.pool.leaked.Add(1)
	}
}

// Blob is an immutable body in a memory file.
type Blob struct {
	refs atomic.Int64
	file *blobFile // descriptor, size and owning Blobs
}

// Size is the body length in bytes.
func (b *Blob) Size() int64 { return b.file.size }

// Acquire takes a reference for a reader. It fails once the last reference
// is gone (the entry was evicted and nobody is reading it): the caller then
// treats the entry as absent.
func (b *Blob) Acquire() bool {
	for {
		n := b.refs.Load()
		if n <= 0 {
			return false
		}
		if b.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Retain takes a reference when the caller already holds one, so it cannot
// fail; it panics if that contract is broken (a use after release would
// otherwise serve another object's bytes from a reused descriptor).
func (b *Blob) Retain() {
	if !b.Acquire() {
		panic("cache: Blob.Retain after the last Release")
	}
}

// Release drops a reference; the last one closes the file.
func (b *Blob) Release() {
	switch n := b.refs.Add(-1); {
	case n == 0:
		b.file.close()
	case n < 0:
		panic("cache: Blob released more often than acquired")
	}
}

// ReadAt reads body bytes at off (io.ReaderAt). The caller holds a reference.
func (b *Blob) ReadAt(p []byte, off int64) (int, error) {
	if off >= b.file.size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := b.file.size - off; int64(want) > rest {
		p = p[:rest]
	}
	n, err := preadFull(b.file.fd, p, off)
	if err == nil && n < want {
		err = io.EOF
	}
	return n, err
}

// Bytes returns a heap copy of the whole body, for the rare paths that need
// it in one piece (multipart ranges). The caller holds a reference.
func (b *Blob) Bytes() ([]byte, error) {
	buf := make([]byte, b.file.size)
	if _, err := b.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return buf, nil
}

// BlobReader streams [off, off+n) of a Blob. It owns one reference, which
// Close releases. Its WriteTo sends with sendfile when the destination is a
// bufio.Writer over the given TCP connection (how fasthttp writes a body
// stream on a plain listener); anything else gets ordinary copies.
type BlobReader struct {
	b      *Blob
	off    int64
	end    int64
	conn   net.Conn
	closed bool
}

// NewReader returns a reader of n bytes from off, taking a reference (the
// caller must already hold one). conn is the client connection, or nil.
func (b *Blob) NewReader(off, n int64, conn net.Conn) *BlobReader {
	if off < 0 || n < 0 || off+n > b.file.size {
		panic(fmt.Sprintf("cache: BlobReader [%d, %d) outside a %d-byte blob", off, off+n, b.file.size))
	}
	b.Retain()
	return &BlobReader{b: b, off: off, end: off + n, conn: conn}
}

// Read implements io.Reader.
func (r *BlobReader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, errBlobReaderClosed
	}
	if r.off >= r.end {
		return 0, io.EOF
	}
	if rest := r.end - r.off; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := r.b.ReadAt(p, r.off)
	r.off += int64(n)
	if errors.Is(err, io.EOF) && r.off < r.end {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

var errBlobReaderClosed = errors.New("cache: read from a closed BlobReader")

// copyBufs holds the buffers of WriteTo's copying path (TLS clients, a
// 304 refill streaming a stored body to waiting clients).
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// WriteTo implements io.WriterTo.
func (r *BlobReader) WriteTo(w io.Writer) (int64, error) {
	if r.closed {
		return 0, errBlobReaderClosed
	}
	if bw, ok := w.(*bufio.Writer); ok && r.conn != nil {
		if rc := rawTCP(r.conn); rc != nil {
			// The response head is still in the buffer: it goes first.
			if err := bw.Flush(); err != nil {
				return 0, err
			}
			n, err := r.b.sendTo(rc, r.off, r.end-r.off)
			r.off += n
			r.b.file.pool.sent.Add(uint64(n))
			return n, err
		}
	}
	var total int64
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for r.off < r.end {
		n, err := r.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return total, err
		}
	}
	return total, nil
}

// Close releases the reader's reference. It is idempotent.
func (r *BlobReader) Close() error {
	if !r.closed {
		r.closed = true
		r.b.Release()
	}
	return nil
}

// rawTCP returns the raw connection of a plain TCP socket, or nil (TLS, or
// anything else sendfile cannot write to as is).
func rawTCP(c net.Conn) syscall.RawConn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}
