package demo

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"
)

// etagCache remembers the content-hash ETag of Root files, keyed by relative
// name and invalidated by size or modification time, so a file is hashed
// once rather than on every request. It grows with the number of distinct
// files served, which is bounded by the directory.
type etagCache struct {
	mu sync.Mutex // guards m
	m  map[string]etagEntry
}

type etagEntry struct {
	size    int64
	modTime time.Time
	etag    string
}

func (c *etagCache) get(name string, fi fs.FileInfo, f io.ReaderAt) (string, error) {
	c.mu.Lock()
	e, ok := c.m[name]
	c.mu.Unlock()
	if ok && e.size == fi.Size() && e.modTime.Equal(fi.ModTime()) {
		return e.etag, nil
	}
	// Hash outside the lock: other files keep being served meanwhile.
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, fi.Size())); err != nil {
		return "", fmt.Errorf("hash %s: %w", name, err)
	}
	etag := `"` + hex.EncodeToString(h.Sum(nil)[:16]) + `"`
	c.mu.Lock()
	c.m[name] = etagEntry{size: fi.Size(), modTime: fi.ModTime(), etag: etag}
	c.mu.Unlock()
	return etag, nil
}

// rootEntity opens the file for a request path below Config.Root. ok is
// false when there is no such regular file; the caller closes the entity.
func (s *Server) rootEntity(reqPath string) (e entity, ok bool, err error) {
	name := strings.TrimPrefix(reqPath, "/")
	if name == "" || strings.HasSuffix(name, "/") {
		name += "index.html"
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || strings.HasPrefix(seg, ".") {
			return entity{}, false, nil
		}
	}
	f, fi, ok := s.openRegular(name)
	if !ok {
		return entity{}, false, nil
	}
	etag, err := s.etags.get(name, fi, f)
	if err != nil {
		f.Close()
		return entity{}, false, err
	}
	ct, cc := typeOf(fi.Name())
	return entity{
		size:         fi.Size(),
		ra:           f,
		closer:       f,
		etag:         etag,
		lastModified: fi.ModTime().UTC().Truncate(time.Second),
		contentType:  ct,
		cacheControl: cc,
	}, true, nil
}

// openRegular opens name, following a directory to its index.html once.
// Open errors (missing, escaping the root, permission) all read as "no such
// file": the origin answers 404 and never says why.
func (s *Server) openRegular(name string) (*os.File, fs.FileInfo, bool) {
	for range 2 {
		f, err := s.root.Open(name)
		if err != nil {
			s.log.Debug("demo origin: open", "name", name, "err", err)
			return nil, nil, false
		}
		fi, err := f.Stat()
		switch {
		case err != nil:
			f.Close()
			return nil, nil, false
		case fi.Mode().IsRegular():
			return f, fi, true
		case fi.IsDir():
			f.Close()
			name += "/index.html"
		default:
			f.Close()
			return nil, nil, false
		}
	}
	return nil, nil, false
}
