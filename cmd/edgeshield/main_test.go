package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestVersionAndUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "edgeshield ") {
		t.Errorf("version: exit %d, stdout %q", code, out.String())
	}
	out.Reset()
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown command "frobnicate"`) {
		t.Errorf("unknown command: exit %d, stderr %q", code, errb.String())
	}
}

func TestRunBadConfigNamesKeyAndLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.yaml")
	os.WriteFile(path, []byte("listen: 127.0.0.1:0\ncache:\n  max_bytes: lots\n"), 0o644)
	var out, errb bytes.Buffer
	code := runEdge(context.Background(), []string{"--config", path}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), path+":3: cache.max_bytes: invalid size") {
		t.Errorf("exit %d, stderr %q; want 2 naming %s:3 cache.max_bytes", code, errb.String(), path)
	}
}

// TestRunDemo is `make run` in miniature: the default config (demo origin)
// on free ports; the printed URL serves the demo site, the second request
// is a hit, and cancelling (Ctrl-C) shuts down cleanly.
func TestRunDemo(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	code := make(chan int, 1)
	go func() {
		code <- runEdge(ctx, []string{"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, pw, io.Discard)
		pw.Close()
	}()
	var base string
	sc := bufio.NewScanner(pr)
	re := regexp.MustCompile(`edge (http://127\.0\.0\.1:\d+) in front of origin`)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			base = m[1]
			break
		}
	}
	go io.Copy(io.Discard, pr)
	if base == "" {
		t.Fatal("run printed no edge URL")
	}
	var cs string
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; i == 0 || (!strings.Contains(cs, "; hit") && time.Now().Before(deadline)); i++ {
		resp, err := http.Get(base + "/css/site.css")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET /css/site.css: %d", resp.StatusCode)
		}
		cs = resp.Header.Get("Cache-Status")
		if i == 0 && !strings.Contains(cs, "fwd=uri-miss") {
			t.Errorf("first request Cache-Status %q, want a miss", cs)
		}
	}
	if !strings.Contains(cs, "; hit") {
		t.Errorf("later request Cache-Status %q, want a hit", cs)
	}
	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("run exited %d after cancel, want 0", c)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("run did not stop")
	}
}

func TestOriginBadFault(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runOrigin(context.Background(), []string{"--fault", "status=abc"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "fault") {
		t.Errorf("bad --fault: exit %d, stderr %q; want 2 naming the flag", code, errb.String())
	}
}
