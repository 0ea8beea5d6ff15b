//go:build !linux

package cache

import "syscall"

func newMemFile([]byte) (int, error) { return -1, ErrBlobUnsupported }

func preadFull(int, []byte, int64) (int, error) { return 0, ErrBlobUnsupported }

func (b *Blob) sendTo(syscall.RawConn, int64, int64) (int64, error) { return 0, ErrBlobUnsupported }

// BlobFileBudget: no memory files here (Blobs.New always fails).
func BlobFileBudget() int { return 0 }
