package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSIGHUPReloadsConfig: `kill -HUP` makes a running node re-read its
// file and apply it (GET /config shows the new value); a broken file is
// refused on stderr and the running configuration stays.
func TestSIGHUPReloadsConfig(t *testing.T) {
	// While this test runs, SIGHUP never takes the default action (ending
	// the test binary): a signal sent before run's handler is registered
	// lands here, and the test sends it again.
	guard := make(chan os.Signal, 16)
	signal.Notify(guard, syscall.SIGHUP)
	defer signal.Stop(guard)

	path := filepath.Join(t.TempDir(), "edge.yaml")
	conf := func(maxBytes string) string {
		return "listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\norigin:\n  url: demo\ncache:\n  max_bytes: " + maxBytes + "\n  max_object_size: 8MiB\n"
	}
	os.WriteFile(path, []byte(conf("64MiB")), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var stderr syncBuffer
	code := make(chan int, 1)
	go func() {
		code <- runEdge(ctx, []string{"--config", path}, pw, &stderr)
		pw.Close()
	}()
	var admin string
	sc := bufio.NewScanner(pr)
	re := regexp.MustCompile(`admin: http://(127\.0\.0\.1:\d+)/stats`)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			admin = m[1]
			break
		}
	}
	go io.Copy(io.Discard, pr)
	if admin == "" {
		t.Fatal("run printed no admin address")
	}
	config := func() string {
		r, err := http.Get("http://" + admin + "/config")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return string(b)
	}
	hupUntil := func(what string, done func() bool) {
		t.Helper()
		for i := 0; i < 50 && !done(); i++ {
			syscall.Kill(os.Getpid(), syscall.SIGHUP)
			time.Sleep(100 * time.Millisecond)
		}
		if !done() {
			t.Fatalf("after SIGHUP: %s did not happen; stderr:\n%s", what, stderr.String())
		}
	}
	if !strings.Contains(config(), "max_bytes: 64MiB") {
		t.Fatalf("GET /config before the reload:\n%s", config())
	}
	os.WriteFile(path, []byte(conf("32MiB")), 0o644)
	hupUntil("max_bytes 32MiB in effect", func() bool { return strings.Contains(config(), "max_bytes: 32MiB") })
	if !strings.Contains(config(), "url: http://127.0.0.1:") {
		t.Errorf("origin.url after the reload is not the demo origin this process started:\n%s", config())
	}
	os.WriteFile(path, []byte(conf("lots")), 0o644)
	hupUntil("the refusal logged", func() bool { return strings.Contains(stderr.String(), "reload refused") })
	if !strings.Contains(stderr.String(), path+":7: cache.max_bytes") {
		t.Errorf("the refusal does not name the file, line and key:\n%s", stderr.String())
	}
	if !strings.Contains(config(), "max_bytes: 32MiB") {
		t.Errorf("a refused reload changed the configuration:\n%s", config())
	}
	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("run exited %d, want 0", c)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("run did not stop")
	}
}
