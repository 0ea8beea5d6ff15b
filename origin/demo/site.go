package demo

import (
	"crypto/sha256"
	"embed"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"path"
	"strings"
	"sync"
	"time"
)

// site holds the text files of the sample site. The large binary objects are
// generated (see sampleSite) so the repository stays small.
//
//go:embed site
var site embed.FS

// siteModTime is the Last-Modified of every embedded object: a fixed instant,
// so validators are identical across builds, runs and processes.
func siteModTime() time.Time { return time.Date(2025, time.June, 1, 12, 0, 0, 0, time.UTC) }

// object is one object of the embedded site. Generated bodies are built on
// first use, so a Server that is never asked for the 6 MiB video never
// spends the memory.
type object struct {
	contentType  string
	cacheControl string
	lastModified time.Time
	lmText       string // lastModified formatted once: the hot path stays allocation-free
	build        func() []byte

	once sync.Once
	data []byte // immutable once built
	etag string
}

func (o *object) load() {
	o.once.Do(func() {
		o.data = o.build()
		o.etag = contentETag(o.data)
	})
}

// sampleSite returns the embedded site by request path.
func sampleSite() (map[string]*object, error) {
	objs := make(map[string]*object)
	add := func(p string, build func() []byte) *object {
		ct, cc := typeOf(p)
		o := &object{contentType: ct, cacheControl: cc, lastModified: siteModTime(), lmText: httpDate(siteModTime()), build: build}
		objs[p] = o
		return o
	}
	for _, p := range []string{"/index.html", "/css/site.css", "/js/app.js", "/img/logo.svg"} {
		b, err := site.ReadFile("site" + p)
		if err != nil {
			return nil, fmt.Errorf("demo origin: embedded file %s: %w", p, err)
		}
		add(p, func() []byte { return b })
	}
	objs["/"] = objs["/index.html"]
	add("/img/photo-64k.jpg", generated("/img/photo-64k.jpg", 64<<10, jpegFraming))
	add("/img/hero-1m.jpg", generated("/img/hero-1m.jpg", 1<<20, jpegFraming))
	add("/media/intro.mp4", generated("/media/intro.mp4", 6<<20, mp4Framing))
	add("/bench/1k.bin", generated("/bench/1k.bin", 1<<10, nil))
	add("/bench/64k.bin", generated("/bench/64k.bin", 64<<10, nil))
	add("/bench/1m.bin", generated("/bench/1m.bin", 1<<20, nil))
	return objs, nil
}

// generated returns a builder of size pseudo-random bytes seeded by name,
// optionally overwritten with a file signature by frame.
func generated(name string, size int, frame func([]byte)) func() []byte {
	return func() []byte {
		b := make([]byte, size)
		pattern{seed: seedOf(name)}.ReadAt(b, 0)
		if frame != nil {
			frame(b)
		}
		return b
	}
}

// jpegFraming gives b a JPEG/JFIF signature: SOI, an APP0 JFIF segment, and
// the EOI marker at the end, so sniffers and file(1) call it a JPEG.
func jpegFraming(b []byte) {
	copy(b, []byte{
		0xFF, 0xD8, // SOI
		0xFF, 0xE0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0x00, 0x01, 0x01, 0x00, 0x00, 0x48, 0x00, 0x48, 0x00, 0x00, // APP0
	})
	copy(b[len(b)-2:], []byte{0xFF, 0xD9}) // EOI
}

// mp4Framing gives b an ISO BMFF signature: an ftyp box followed by one
// mdat box spanning the rest of the file.
func mp4Framing(b []byte) {
	ftyp := []byte{0, 0, 0, 32, 'f', 't', 'y', 'p', 'i', 's', 'o', 'm', 0, 0, 2, 0,
		'i', 's', 'o', 'm', 'i', 's', 'o', '2', 'a', 'v', 'c', '1', 'm', 'p', '4', '1'}
	copy(b, ftyp)
	binary.BigEndian.PutUint32(b[len(ftyp):], uint32(len(b)-len(ftyp)))
	copy(b[len(ftyp)+4:], "mdat")
}

// contentETag is a strong entity-tag derived from the content alone
// (RFC 9110 §8.8.3), so equal bytes get equal tags in every process.
func contentETag(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:16]) + `"`
}

// Cache-Control values by kind of object.
const (
	ccHTML      = "public, max-age=60, stale-while-revalidate=30"
	ccImmutable = "public, max-age=31536000, immutable"
	ccDay       = "public, max-age=86400"
	ccHour      = "public, max-age=3600"
)

// typeOf returns the Content-Type and Cache-Control for a path by its
// extension. The table is fixed rather than taken from mime.TypeByExtension,
// whose answers depend on the host's mime.types files.
func typeOf(p string) (contentType, cacheControl string) {
	switch strings.ToLower(path.Ext(p)) {
	case ".html", ".htm":
		return "text/html; charset=utf-8", ccHTML
	case ".css":
		return "text/css; charset=utf-8", ccImmutable
	case ".js", ".mjs":
		return "text/javascript; charset=utf-8", ccImmutable // RFC 9239 §6
	case ".woff2":
		return "font/woff2", ccImmutable
	case ".woff":
		return "font/woff", ccImmutable
	case ".svg":
		return "image/svg+xml", ccDay
	case ".jpg", ".jpeg":
		return "image/jpeg", ccDay
	case ".png":
		return "image/png", ccDay
	case ".gif":
		return "image/gif", ccDay
	case ".webp":
		return "image/webp", ccDay
	case ".avif":
		return "image/avif", ccDay
	case ".ico":
		return "image/x-icon", ccDay
	case ".mp4", ".m4v":
		return "video/mp4", ccDay
	case ".webm":
		return "video/webm", ccDay
	case ".json":
		return "application/json", ccHour
	case ".txt":
		return "text/plain; charset=utf-8", ccHour
	case ".xml":
		return "application/xml", ccHour
	case ".wasm":
		return "application/wasm", ccHour
	default: // .bin and everything else
		return "application/octet-stream", ccHour
	}
}

// siteEntity returns the embedded object for a request path.
func (s *Server) siteEntity(path []byte) (entity, bool) {
	o, ok := s.objects[string(path)]
	if !ok {
		return entity{}, false
	}
	o.load()
	return entity{
		size:         int64(len(o.data)),
		data:         o.data,
		etag:         o.etag,
		lastModified: o.lastModified,
		lmText:       o.lmText,
		contentType:  o.contentType,
		cacheControl: o.cacheControl,
	}, true
}
