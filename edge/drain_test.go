package edge

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestGracefulDrain: on shutdown readiness turns 503 at once while requests
// are still served through the drain delay, an in-flight request finishes,
// and only then does the node stop accepting (rolling deploys drop nothing).
func TestGracefulDrain(t *testing.T) {
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(600 * time.Millisecond)
		}
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "ok")
	})
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) {
		c.Server.DrainDelay = Duration(400 * time.Millisecond)
		c.Server.HealthPath = "/ready"
	})
	base := "http://" + n.Addr()
	slow := make(chan error, 1)
	go func() {
		resp, err := http.Get(base + "/slow") // a fresh connection: in flight during the drain
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "ok" {
				err = &net.OpError{Op: "status " + resp.Status}
			}
		}
		slow <- err
	}()
	waitFor(t, "the slow request to reach the origin", 5*time.Second, func() bool { return o.count("/slow") == 1 })

	done := make(chan error, 1)
	go func() { done <- n.Shutdown(context.Background()) }()
	waitFor(t, "readiness to turn 503", 2*time.Second, func() bool {
		r, _ := get(t, base+"/ready")
		return r.StatusCode == http.StatusServiceUnavailable
	})
	// Still serving during the drain delay (DNS has not moved everyone yet).
	if r, b := get(t, base+"/during-drain"); r.StatusCode != 200 || b != "ok" {
		t.Errorf("request during the drain delay: %d %q, want 200", r.StatusCode, b)
	} else if !r.Close {
		t.Errorf("response during the drain delay keeps the connection alive; want Connection: close so clients reconnect elsewhere")
	}
	if err := <-slow; err != nil {
		t.Errorf("in-flight request failed during shutdown: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if c, err := net.DialTimeout("tcp", n.Addr(), time.Second); err == nil {
		c.Close()
		t.Errorf("still accepting connections after Shutdown")
	}
}

// TestShutdownRightAfterStart: a shutdown that arrives before the listener
// goroutines got going still stops them (fasthttp's Shutdown alone misses a
// Serve that has not registered its listener yet, which then accepts
// forever).
func TestShutdownRightAfterStart(t *testing.T) {
	for i := 0; i < 20; i++ {
		cfg := DefaultConfig()
		cfg.Listen, cfg.Admin.Listen = "127.0.0.1:0", "127.0.0.1:0"
		cfg.Origin.URL = "http://127.0.0.1:1"
		n, err := New(cfg, Options{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			done <- n.Shutdown(ctx)
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: Shutdown: %v", i, err)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("round %d: Shutdown right after Start did not return", i)
		}
	}
}
