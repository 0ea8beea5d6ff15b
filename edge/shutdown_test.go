package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestShutdownDuringMisses shuts a node down in the middle of 200
// concurrent misses of large objects streamed slowly by the origin (some
// keys shared by several clients, so flights have waiters), round after
// round: Shutdown returns within its bound without leaving work stuck, no
// goroutine panics, the store is closed only once no fill runs, and every
// goroutine of the round is gone once its node and origin are closed.
func TestShutdownDuringMisses(t *testing.T) {
	if testing.Short() {
		t.Skip("50 rounds of 200 requests")
	}
	const rounds = 50
	// A first round starts what the process keeps for good (fasthttp's
	// date updater, the HTTP client's and the race detector's helpers), so
	// that the baseline counts only it.
	shutdownRound(t, 0, 8)
	base, _ := settledGoroutines(0, time.Second)
	for r := 1; r <= rounds; r++ {
		shutdownRound(t, r, 200)
		if t.Failed() {
			return
		}
		if got, stacks := settledGoroutines(base, 5*time.Second); got > base {
			t.Fatalf("round %d: got %d goroutines after the node and origin closed, want at most %d:\n%s", r, got, base, stacks)
		}
	}
}

// lingering are goroutines that outlive a closed server by design, for a
// bounded time or for the process: fasthttp's worker-pool cleaner sleeps
// its idle duration (10 s) before it sees the stop, and its date updater
// runs for good.
var lingering = []string{
	"fasthttp.(*workerPool).Start.func2",
	"fasthttp.updateServerDate",
}

// settledGoroutines waits up to d for the goroutines (not counting
// lingering ones) to fall to want, and returns the last count with the
// stacks it counted.
func settledGoroutines(want int, d time.Duration) (int, string) {
	deadline := time.Now().Add(d)
	buf := make([]byte, 8<<20)
	for {
		var live []string
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if !slices.ContainsFunc(lingering, func(s string) bool { return strings.Contains(g, s) }) {
				live = append(live, g)
			}
		}
		if len(live) <= want || time.Now().After(deadline) {
			return len(live), strings.Join(live, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// shutdownRound runs one round of TestShutdownDuringMisses with clients
// concurrent requests over clients*2/5 keys.
func shutdownRound(t *testing.T, round, clients int) {
	t.Helper()
	// 2 MiB at 8 KiB every 20 ms: a body takes longer than
	// backgroundGrace, so a fill that ignored the shutdown would hold it up
	// and be reported.
	const size, chunk = 2 << 20, 8 << 10
	stop := make(chan struct{})
	var started atomic.Int64
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Length", fmt.Sprint(size))
		buf := make([]byte, chunk)
		for sent := 0; sent < size; sent += chunk {
			if _, err := w.Write(buf); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-time.After(20 * time.Millisecond):
			case <-r.Context().Done():
				return
			case <-stop:
				return
			}
		}
	})
	n := startTestNode(t, o.srv.URL, nil, func(c *Config) { c.Server.DrainDelay = 0 })
	t.Cleanup(func() { n.Shutdown(context.Background()) }) // a no-op after the round's
	tr := &http.Transport{MaxIdleConnsPerHost: clients, DisableCompression: true}
	client := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	keys := max(clients*2/5, 1)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			resp, err := client.Get(fmt.Sprintf("http://%s/big/%d", n.Addr(), i%keys))
			if err != nil {
				return // refused or cut by the shutdown
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	// In the middle: fetches have started and bodies are streaming; the
	// round number varies how far they got.
	waitFor(t, "origin fetches", 10*time.Second, func() bool { return started.Load() >= int64(max(keys/4, 1)) })
	time.Sleep(time.Duration(round%4) * 10 * time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	begun := time.Now()
	err := n.Shutdown(ctx)
	took := time.Since(begun)
	switch {
	case errors.Is(err, errBackgroundStuck):
		t.Errorf("round %d: Shutdown: got %v: background work ignored its cancellation", round, err)
	case err != nil && !errors.Is(err, context.DeadlineExceeded):
		t.Errorf("round %d: Shutdown: got %v, want nil or the deadline", round, err)
	case took > backgroundGrace:
		t.Errorf("round %d: Shutdown took %v, want it bounded by its context and the cancelled fills", round, took)
	}
	if n.bg.stuck {
		t.Errorf("round %d: the store was left open: background work outlived its cancellation", round)
	} else if running := n.bg.running.Load(); running != 0 {
		t.Errorf("round %d: store closed while %d background tasks (fills) still run", round, running)
	}
	if p := n.Stats().Panics; p != 0 {
		t.Errorf("round %d: got %d panics, want 0", round, p)
	}

	close(stop)
	wg.Wait()
	tr.CloseIdleConnections()
	o.srv.Close()
}
