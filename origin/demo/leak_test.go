package demo

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// A full lifecycle with every kind of response leaves no goroutine behind.
func TestNoGoroutineLeak(t *testing.T) {
	exercise := func() {
		s, err := New(Config{Latency: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		c := newClient(t)
		do(t, c, "GET", s.URL()+"/media/intro.mp4", map[string]string{"Range": "bytes=0-99"})
		do(t, c, "GET", s.URL()+"/dyn/a?chunked=1&size=3000&chunkdelay=1ms", nil)
		do(t, c, "GET", s.URL()+"/bench/1k.bin", map[string]string{HeaderStall: "1ms"})
		doErr(c, "GET", s.URL()+"/", map[string]string{HeaderReset: "1"})
		// Left in flight for Close to cut short.
		go doErr(c, "GET", s.URL()+"/", map[string]string{HeaderDelay: "10m"})
		waitFor(t, "the delayed request", func() bool { return s.Count("/") == 2 })
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		c.CloseIdleConnections()
	}
	exercise() // starts fasthttp's process-wide helpers (the Date ticker)
	before, _ := goroutines()
	exercise()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, dump := goroutines()
		if n <= before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d goroutines after Close, want at most %d:\n%s", n, before, dump)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// goroutines counts live goroutines, leaving out fasthttp's worker-pool
// cleaner: after Stop it sleeps out its MaxIdleWorkerDuration (10 s) before
// it notices, which is fasthttp's doing and bounded.
func goroutines() (int, string) {
	buf := make([]byte, 4<<20)
	dump := string(buf[:runtime.Stack(buf, true)])
	n := 0
	for _, g := range strings.Split(dump, "\n\n") {
		if strings.HasPrefix(g, "goroutine ") && !strings.Contains(g, "fasthttp.(*workerPool).Start.func2") {
			n++
		}
	}
	return n, dump
}
