package edge

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// chromiumPage is the demo page of TestChromiumLoadsOverHTTP2: once loaded,
// its script writes the protocol of the navigation and of each subresource
// (Resource Timing's nextHopProtocol: "h2" for HTTP/2) into #out, which
// --dump-dom prints.
const chromiumPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>edge h2</title>
<link rel="stylesheet" href="/static/site.css">
<script src="/static/site.js"></script>
</head><body><p id="out">pending</p>
<script>
window.addEventListener('load', function () {
  var parts = ['nav=' + performance.getEntriesByType('navigation')[0].nextHopProtocol];
  performance.getEntriesByType('resource').forEach(function (e) {
    parts.push(new URL(e.name).pathname + '=' + e.nextHopProtocol);
  });
  document.getElementById('out').textContent = parts.join(' ');
});
</script></body></html>`

// TestChromiumLoadsOverHTTP2 has a real browser load a page, its
// stylesheet and its script through the edge's HTTPS listener, and checks
// the browser spoke HTTP/2 for each (ALPN h2) and the edge counted them as
// h2 requests (issue 12). Chromium is required when CI=true.
func TestChromiumLoadsOverHTTP2(t *testing.T) {
	bin := chromiumBin(t, "browser over HTTP/2 not checked")
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		switch r.URL.Path {
		case "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			io.WriteString(w, chromiumPage)
		case "/static/site.css":
			w.Header().Set("Content-Type", "text/css")
			io.WriteString(w, "body { font-family: sans-serif; }\n")
		case "/static/site.js":
			w.Header().Set("Content-Type", "text/javascript")
			io.WriteString(w, "window.siteLoaded = true;\n")
		default:
			http.NotFound(w, r)
		}
	})
	tn := newTLSTestNode(t, o.srv.URL, nil, nil)
	before := tn.Stats()

	// The test certificate names 127.0.0.1; the browser does not trust it
	// (--ignore-certificate-errors). QUIC is off so that Alt-Svc cannot move
	// the subresources to HTTP/3: this test is about HTTP/2.
	stdout, stderr := runChromium(t, bin, t.TempDir(), "--ignore-certificate-errors", "--disable-quic",
		"--virtual-time-budget=5000", "--dump-dom", "https://127.0.0.1:"+portOf(tn.TLSAddr())+"/")

	m := regexp.MustCompile(`<p id="out">([^<]*)</p>`).FindSubmatch(stdout)
	if m == nil {
		t.Fatalf("no #out in the dumped DOM:\n%s\nstderr:\n%s", string(stdout), string(stderr))
	}
	got := map[string]string{}
	for _, kv := range regexp.MustCompile(`(\S+)=(\S*)`).FindAllSubmatch(m[1], -1) {
		got[string(kv[1])] = string(kv[2])
	}
	for _, what := range []string{"nav", "/static/site.css", "/static/site.js"} {
		if got[what] != "h2" {
			t.Errorf("%s: nextHopProtocol %q, want \"h2\" (page reported %q)", what, got[what], m[1])
		}
	}
	after := tn.Stats()
	if h2 := after.RequestsH2 - before.RequestsH2; h2 < 3 {
		t.Errorf("edge counted %d h2 requests, want at least 3 (page, stylesheet, script)", h2)
	}
	if h1, h3 := after.RequestsH1-before.RequestsH1, after.RequestsH3-before.RequestsH3; h1 != 0 || h3 != 0 {
		t.Errorf("edge counted %d h1 and %d h3 requests from the browser, want 0", h1, h3)
	}
}

// chromiumBin finds Chromium (Debian package chromium), skipping the test
// with what is not checked when it is missing, failing it under CI=true.
func chromiumBin(t *testing.T, notChecked string) string {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium not installed (required when CI=true)")
		}
		t.Skip("chromium not installed (Debian package chromium): " + notChecked)
	}
	return bin
}

// runChromium runs headless Chromium with args and a fresh profile under
// dir, in its own process group so that its helper processes go with it
// however the test ends, and returns what it printed. It fails the test
// when Chromium fails or runs over 90 s.
func runChromium(t *testing.T, bin, dir string, args ...string) (stdout, stderr []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args = append([]string{"--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-extensions", "--user-data-dir=" + filepath.Join(dir, "profile")}, args...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	defer syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) //nolint:errcheck // gone already, usually
	if err := cmd.Wait(); err != nil {
		t.Fatalf("chromium %q: %v\nstdout:\n%s\nstderr:\n%s", args, err, out.String(), errOut.String())
	}
	return out.Bytes(), errOut.Bytes()
}
