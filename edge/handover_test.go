package edge

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeshield/edgeshield/edge/certs"
)

// TestHandoverClosesAfterTheNextResponse is the old process's side of a
// binary upgrade. The node gets its listeners from Options.Listen; a
// "successor" serves a second descriptor of the same public socket (what
// tableflip hands the new process). After Handover starts: new connections
// reach the successor only; a keep-alive connection that sends its next
// request gets its answer from the old node with "Connection: close" and is
// closed after it (never under a request); an idle keep-alive connection is
// closed once the grace has passed; Handover returns and the successor
// still serves.
func TestHandoverClosesAfterTheNextResponse(t *testing.T) {
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "old")
	})
	var mu sync.Mutex
	var opened []net.Listener
	cfg := DefaultConfig()
	cfg.Name, cfg.Listen, cfg.Admin.Listen, cfg.Origin.URL = "edge-old", "127.0.0.1:0", "127.0.0.1:0", o.srv.URL
	cfg.Server.DrainDelay = Duration(time.Minute) // a handover must not wait it
	n, err := New(cfg, Options{Logger: testLogger(t), Listen: func(network, addr string) (net.Listener, error) {
		ln, err := net.Listen(network, addr)
		if err == nil {
			mu.Lock()
			opened = append(opened, ln)
			mu.Unlock()
		}
		return ln, err
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		n.Shutdown(ctx)
	})
	if len(opened) != 2 {
		t.Fatalf("Options.Listen opened %d listeners, want 2 (public, admin): %v", len(opened), opened)
	}
	busy, idle := dialKeepAlive(t, n.Addr()), dialKeepAlive(t, n.Addr())
	for _, c := range []*keepAliveConn{busy, idle} {
		if body, closed := c.get(t, "/a"); body != "old" || closed {
			t.Fatalf("before the handover: body %q, close %v; want old, kept alive", body, closed)
		}
	}
	successor := serveSuccessor(t, n.Addr(), opened)

	done := make(chan error, 1)
	const grace = 3 * time.Second
	go func() { done <- n.Handover(context.Background(), grace) }()
	waitFor(t, "the old node to stop accepting", 5*time.Second, func() bool {
		_, b := get(t, "http://"+n.Addr()+"/new-conn")
		return b == "successor"
	})
	for i := range 20 { // new connections: the successor's, every one
		if _, b := get(t, "http://"+n.Addr()+"/new-conn"); b != "successor" {
			t.Fatalf("new connection %d after the handover answered %q, want the successor", i, b)
		}
		testHTTP.CloseIdleConnections()
	}
	if body, closed := busy.get(t, "/a"); body != "old" || !closed {
		t.Errorf("keep-alive request during the handover: body %q, Connection: close %v; want old's answer and close", body, closed)
	}
	if err := busy.eof(); err != nil {
		t.Errorf("after its Connection: close answer: %v, want EOF", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Handover: %v", err)
		}
	case <-time.After(grace + 10*time.Second):
		t.Fatal("Handover did not return")
	}
	if err := idle.eof(); err != nil {
		t.Errorf("idle keep-alive connection after the handover: %v, want closed (EOF)", err)
	}
	if _, b := get(t, "http://"+n.Addr()+"/after"); b != "successor" {
		t.Errorf("after Handover returned: %q, want the successor", b)
	}
	successor.Close()
}

// serveSuccessor serves a duplicate descriptor of the public listener, as
// the upgraded process would, answering "successor".
func serveSuccessor(t *testing.T, addr string, opened []net.Listener) *http.Server {
	t.Helper()
	var pub net.Listener
	for _, ln := range opened {
		if ln.Addr().String() == addr {
			pub = ln
		}
	}
	f, err := pub.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	dup, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "successor")
	})}
	go srv.Serve(dup)
	t.Cleanup(func() { srv.Close() })
	return srv
}

// keepAliveConn is one client connection sending HTTP/1.1 requests by hand,
// so the test sees exactly when the server closes it.
type keepAliveConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialKeepAlive(t *testing.T, addr string) *keepAliveConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAliveConn{c: c, br: bufio.NewReader(c)}
}

// get sends one GET and returns the body and whether the answer said
// Connection: close.
func (k *keepAliveConn) get(t *testing.T, path string) (string, bool) {
	t.Helper()
	k.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(k.c, "GET "+path+" HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("body %s: %v", path, err)
	}
	return string(b), resp.Close
}

// eof reads until the server closes the connection (10 s at most).
func (k *keepAliveConn) eof() error {
	k.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := k.br.ReadByte()
	switch {
	case err == nil:
		return errors.New("unexpected byte " + string(b))
	case errors.Is(err, io.EOF):
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return errors.New("still open")
	case strings.Contains(err.Error(), "reset"):
		return errors.New("reset, not closed: " + err.Error())
	}
	return err
}

// TestHandoverTLSSocketsFromTheHooks: with HTTPS and HTTP/3 every socket,
// the UDP one included, comes from Options.Listen and ListenPacket (so an
// upgraded process inherits them all), and Handover releases them.
func TestHandoverTLSSocketsFromTheHooks(t *testing.T) {
	o := newTestOrigin(t, nil, static("ok"))
	certFile, keyFile, _ := testCert(t)
	cfg := DefaultConfig()
	cfg.Name, cfg.Listen, cfg.Admin.Listen, cfg.Origin.URL = "edge-tls", "127.0.0.1:0", "127.0.0.1:0", o.srv.URL
	cfg.TLS.Mode, cfg.TLS.Listen, cfg.TLS.HTTP, cfg.TLS.Storage = "manual", "127.0.0.1:0", "serve", t.TempDir()
	cfg.TLS.DefaultServerName, cfg.TLS.HTTP2, cfg.TLS.HTTP3 = "edge.test", true, true
	cfg.TLS.Certificates = []certs.CertFile{{Cert: certFile, Key: keyFile}}
	var mu sync.Mutex
	var tcp []string
	var udp []net.PacketConn
	n, err := New(cfg, Options{Logger: testLogger(t),
		Listen: func(network, addr string) (net.Listener, error) {
			mu.Lock()
			tcp = append(tcp, network)
			mu.Unlock()
			return net.Listen(network, addr)
		},
		ListenPacket: func(network, addr string) (net.PacketConn, error) {
			pc, err := net.ListenPacket(network, addr)
			if err == nil {
				mu.Lock()
				udp = append(udp, pc)
				mu.Unlock()
			}
			return pc, err
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	if len(tcp) != 3 || len(udp) != 1 {
		t.Fatalf("hooks opened %d TCP listeners and %d UDP sockets, want 3 (plain, HTTPS, admin) and 1 (HTTP/3)", len(tcp), len(udp))
	}
	if got, want := udp[0].LocalAddr().String(), n.TLSAddr(); got != want {
		t.Errorf("HTTP/3 socket on %s, want the HTTPS address %s", got, want)
	}
	if err := n.Handover(context.Background(), time.Second); err != nil {
		t.Errorf("Handover: %v", err)
	}
	for _, addr := range []string{n.Addr(), n.TLSAddr(), n.AdminAddr()} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("after Handover %s is still bound: %v", addr, err)
			continue
		}
		ln.Close()
	}
	pc, err := net.ListenPacket("udp", udp[0].LocalAddr().String())
	if err != nil {
		t.Errorf("after Handover the HTTP/3 socket is still bound: %v", err)
	} else {
		pc.Close()
	}
}
