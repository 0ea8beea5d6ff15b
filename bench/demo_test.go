package bench

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeshield/edgeshield/origin/demo"
)

// TestAgainstDemoOrigin drives the real demo origin (no cache in front):
// every crowd request reaches it, and the counts read from its
// /__origin/counts document match, which pins the counters' JSON format.
func TestAgainstDemoOrigin(t *testing.T) {
	srv, err := demo.New(demo.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	dir := t.TempDir()
	code, stdout, stderr := runCLI(t, "crowd", "--clients", "10", "--url", srv.URL()+"/dyn/a?size=100", "--url", srv.URL()+"/bench/1k.bin",
		"--origin-counts", srv.URL()+"/__origin/counts", "--json", filepath.Join(dir, "crowd.json"))
	if code != ExitOK {
		t.Fatalf("exit %d: %s %s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "origin requests 20 (/bench/1k.bin 10, /dyn/a 10)") {
		t.Errorf("stdout:\n%s\nwant 10 origin requests per object", stdout)
	}
	if got := srv.Count("/dyn/a"); got != 10 {
		t.Errorf("demo origin counted %d requests for /dyn/a, want 10", got)
	}

	code, stdout, stderr = runCLI(t, "steady", "--rate", "200", "--duration", "500ms", "--zipf", "50",
		"--base", srv.URL()+"/dyn/z-%d?size=512", "--slo", "errors=0,p99<1s")
	if code != ExitOK || !strings.Contains(stdout, "hits 100, successful 100") {
		t.Errorf("zipf run against the demo origin: exit %d\n%s%s", code, stdout, stderr)
	}
}
