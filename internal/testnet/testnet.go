// Package testnet holds loopback network helpers shared by tests.
package testnet

import (
	"fmt"
	"syscall"
	"testing"
)

// RefusedAddr returns a loopback host:port where every connection is
// refused. A socket is bound to the port and never listens, so the port
// stays reserved for the whole test: a closed listener's port, the usual
// trick, can be taken by another test running in parallel, which turns
// "refused" into a hang or a wrong answer. The socket closes with the test.
func RefusedAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	in4, ok := sa.(*syscall.SockaddrInet4)
	if !ok {
		t.Fatalf("getsockname: unexpected %T", sa)
	}
	return fmt.Sprintf("127.0.0.1:%d", in4.Port)
}
