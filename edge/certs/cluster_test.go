package certs

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// nodeEnv makes the test binary run as one cluster node (a child process)
// instead of running tests. Separate processes matter: certmagic keeps the
// challenges a process presents in a process-wide map, so only a node in
// another process proves that challenges travel through shared storage.
const nodeEnv = "EDGESHIELD_CERTS_TEST_NODE"

func TestMain(m *testing.M) {
	if spec := os.Getenv(nodeEnv); spec != "" {
		os.Exit(runChildNode(spec))
	}
	os.Exit(m.Run())
}

// childSpec is what a child node gets from its parent.
type childSpec struct {
	Node                    string
	Names                   []string
	CA                      string
	TrustedRoots            []string
	Storage                 string
	HTTPPort, TLSPort       int // the challenge ports (where the VA goes)
	DisableTLSALPNChallenge bool
}

// runChildNode serves one node on ephemeral loopback ports, prints
// "READY <http addr> <tls addr>" and runs until its stdin closes.
func runChildNode(specJSON string) int {
	var spec childSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "bad spec:", err)
		return 2
	}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	m, err := New(context.Background(), Config{
		Mode: ModeACME, Names: spec.Names, CA: spec.CA, TrustedRoots: spec.TrustedRoots,
		AgreeTerms: true, Storage: spec.Storage, HTTPPort: spec.HTTPPort, TLSPort: spec.TLSPort,
		DisableTLSALPNChallenge: spec.DisableTLSALPNChallenge,
		Logger:                  slog.New(slog.NewJSONHandler(os.Stderr, nil)),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "New:", err)
		return 1
	}
	stop := &childServers{}
	stop.serve(tls.NewListener(tlsLn, m.TLSConfig()), okHandler(spec.Node))
	stop.serve(httpLn, m.HTTPHandler(okHandler(spec.Node+" (plain)")))
	fmt.Printf("READY %s %s\n", httpLn.Addr(), tlsLn.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin) // parent closes stdin to stop us
	stop.close()
	m.Close()
	return 0
}

// child is a running child node as seen by the parent.
type child struct {
	httpAddr, tlsAddr string
	log               *lockedBuffer // the node's JSON log (stderr)
}

func startChild(t *testing.T, spec childSpec) *child {
	t.Helper()
	specJSON, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), nodeEnv+"="+string(specJSON))
	c := &child{log: &lockedBuffer{}}
	cmd.Stderr = c.log
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("node %s log:\n%s", spec.Node, tail(c.log.String(), 60))
		}
	})
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		close(done)
	}()
	select {
	case line := <-ready:
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "READY" {
			t.Fatalf("node %s: got %q, want READY line", spec.Node, line)
		}
		c.httpAddr, c.tlsAddr = f[1], f[2]
	case <-time.After(30 * time.Second):
		t.Fatalf("node %s did not start", spec.Node)
	}
	return c
}

// forwarder is the cluster's load balancer in front of the challenge port:
// it holds each connection until a target is chosen, then proxies to it.
type forwarder struct {
	ln     net.Listener
	once   sync.Once
	ready  chan struct{}
	target string // written once before ready is closed
	wg     sync.WaitGroup
}

func newForwarder(t *testing.T, ln net.Listener) *forwarder {
	f := &forwarder{ln: ln, ready: make(chan struct{})}
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(func() {
		ln.Close()
		f.wg.Wait()
	})
	return f
}

func (f *forwarder) route(target string) {
	f.once.Do(func() {
		f.target = target
		close(f.ready)
	})
}

func (f *forwarder) accept() {
	defer f.wg.Done()
	for {
		conn, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer conn.Close()
			select {
			case <-f.ready:
			case <-time.After(20 * time.Second):
				return
			}
			up, err := net.DialTimeout("tcp", f.target, 5*time.Second)
			if err != nil {
				return
			}
			defer up.Close()
			_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
			_ = up.SetDeadline(time.Now().Add(20 * time.Second))
			go func() { _, _ = io.Copy(up, conn) }()
			_, _ = io.Copy(conn, up)
		}()
	}
}

// TestClusterSharedStorage runs three nodes on one storage directory: node
// A in this process, B and C as child processes. A starts the orders;
// Pebble's HTTP-01 validation is routed to B, which never started an
// order and can only find the challenge in the shared storage. Then:
// Pebble saw exactly one order per name, and all three nodes serve the
// same certificate.
func TestClusterSharedStorage(t *testing.T) {
	names := []string{uniqueHost("a"), uniqueHost("b")}
	vaLn, unusedTLS := listen(t), listen(t)
	p := startPebble(t, pebbleOpts{httpPort: portOf(vaLn), tlsPort: portOf(unusedTLS)})
	fwd := newForwarder(t, vaLn)
	storage := t.TempDir()

	// Node A: starts first, so it takes the issuance locks.
	cfg := p.config(storage, portOf(vaLn), portOf(unusedTLS))
	cfg.Names = names
	cfg.DisableTLSALPNChallenge = true // validation must go through the routed HTTP port
	logA := &lockedBuffer{}
	cfg.Logger = bufferLogger(t, logA)
	aTLS := listen(t)
	a := newManager(t, cfg)
	serveNode(t, a, aTLS, nil, "A")
	for _, n := range names {
		waitLock(t, storage, n)
	}

	spec := childSpec{Names: names, CA: p.dirURL, TrustedRoots: []string{p.tlsRoot}, Storage: storage,
		HTTPPort: portOf(vaLn), TLSPort: portOf(unusedTLS), DisableTLSALPNChallenge: true}
	spec.Node = "B"
	b := startChild(t, spec)
	spec.Node = "C"
	c := startChild(t, spec)
	fwd.route(b.httpAddr) // the VA reaches B only

	nodes := map[string]string{"A": aTLS.Addr().String(), "B": b.tlsAddr, "C": c.tlsAddr}
	for _, name := range names {
		var serials = map[string]string{}
		for node, addr := range nodes {
			eventually(t, 90*time.Second, fmt.Sprintf("node %s serves %s", node, name), func() error {
				status, body, _, err := httpsGet(addr, name, p.roots)
				if err != nil {
					return err
				}
				if status != 200 || body != "hello from "+node {
					return fmt.Errorf("got %d %q", status, body)
				}
				cs, err := handshake(addr, name, p.roots)
				if err != nil {
					return err
				}
				serials[node] = cs.PeerCertificates[0].SerialNumber.String()
				return nil
			})
		}
		if serials["A"] != serials["B"] || serials["A"] != serials["C"] {
			t.Errorf("%s: got serials %v, want one certificate on all nodes", name, serials)
		}
	}

	// One order per name: each certmagic order names one host, and Pebble
	// logs every order it creates.
	if got, want := p.orders(), len(names); got != want {
		t.Errorf("Pebble orders: got %d, want %d (one per name for the cluster)", got, want)
	}
	if got, want := p.issued(), len(names); got != want {
		t.Errorf("Pebble certificates issued: got %d, want %d", got, want)
	}
	if got := strings.Count(logA.String(), "msg=\"obtaining certificate\""); got != len(names) {
		t.Errorf("node A: got %d orders started, want %d", got, len(names))
	}
	// B answered both challenges from storage; A (which presented them)
	// and C were never asked.
	for _, name := range names {
		if !servedDistributed(b.log.String(), name) {
			t.Errorf("node B log: want %s's key authorization served from shared storage (distributed)", name)
		}
	}
	if strings.Contains(logA.String(), "served key authentication") || strings.Contains(c.log.String(), "served key authentication") {
		t.Error("nodes A or C served a challenge; the route sent every validation to B")
	}
	if strings.Contains(b.log.String(), `"msg":"obtaining certificate"`) {
		t.Error("node B started an order; only A should have")
	}
}

// servedDistributed reports whether a node's JSON log has certmagic's
// "served key authentication" entry for name with distributed=true.
func servedDistributed(log, name string) bool {
	for line := range strings.SplitSeq(log, "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		if e["msg"] == "served key authentication" && e["identifier"] == name && e["distributed"] == true {
			return true
		}
	}
	return false
}

// childServers runs fasthttp servers in a child node.
type childServers struct {
	stops []func()
}

func (s *childServers) serve(ln net.Listener, h fasthttp.RequestHandler) {
	srv := &fasthttp.Server{Handler: h, Logger: discardLogger{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	s.stops = append(s.stops, func() {
		_ = srv.Shutdown()
		<-done
	})
}

func (s *childServers) close() {
	for _, f := range s.stops {
		f()
	}
}
