package cache

import (
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// newMemFile returns a sealed memory file holding body.
func newMemFile(body []byte) (int, error) {
	fd, err := unix.MemfdCreate("edgeshield-body", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, os.NewSyscallError("memfd_create", err)
	}
	for off := 0; off < len(body); {
		n, err := unix.Pwrite(fd, body[off:], int64(off))
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			_ = unix.Close(fd)
			if err == nil {
				err = io.ErrShortWrite
			}
			return -1, os.NewSyscallError("pwrite", err)
		}
		off += n
	}
	// Immutable from here on: a bug elsewhere cannot change a stored body.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS,
		unix.F_SEAL_SEAL|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE); err != nil {
		_ = unix.Close(fd)
		return -1, os.NewSyscallError("fcntl F_ADD_SEALS", err)
	}
	return fd, nil
}

// preadFull reads len(p) bytes at off unless the file ends first.
func preadFull(fd int, p []byte, off int64) (int, error) {
	total := 0
	for total < len(p) {
		n, err := unix.Pread(fd, p[total:], off+int64(total))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return total, os.NewSyscallError("pread", err)
		}
		if n == 0 {
			return total, io.EOF
		}
		total += n
	}
	return total, nil
}

// sendTo writes n bytes from off to the socket with sendfile(2), waiting in
// the runtime's poller (and so under the connection's write deadline) while
// the socket buffer is full.
func (b *Blob) sendTo(rc syscall.RawConn, off, n int64) (int64, error) {
	var (
		written int64
		serr    error
	)
	err := rc.Write(func(sock uintptr) bool {
		for n > 0 {
			m, err := unix.Sendfile(int(sock), b.file.fd, &off, int(min(n, 1<<30)))
			if m > 0 {
				written += int64(m)
				n -= int64(m)
			}
			switch {
			case err == unix.EAGAIN:
				return false // wait until writable, then call again
			case err == unix.EINTR:
			case err != nil:
				serr = os.NewSyscallError("sendfile", err)
				return true
			case m == 0:
				serr = io.ErrUnexpectedEOF // the file is shorter than its Blob says
				return true
			}
		}
		return true
	})
	if serr != nil {
		return written, serr
	}
	return written, err
}

// BlobFileBudget is how many memory files Blobs may keep open: half the
// process's open-file limit (Go raises the soft limit to the hard one at
// start), leaving the rest to client, origin and peer connections.
func BlobFileBudget() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY {
		return 1 << 20
	}
	return max(int(rl.Cur/2), 1)
}
