package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := RunCLI(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestRunCLIUsageErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no scenario", nil, "usage: edgeshield bench"},
		{"unknown scenario", []string{"soak"}, `unknown scenario "soak"`},
		{"steady without rate", []string{"steady", "--url", "http://127.0.0.1:1/"}, "--rate must be"},
		{"no target", []string{"steady", "--rate", "10"}, "exactly one of --url"},
		{"two target kinds", []string{"steady", "--rate", "10", "--url", "http://a/", "--zipf", "10", "--base", "http://a/"}, "exactly one of"},
		{"zipf without base", []string{"steady", "--rate", "10", "--zipf", "10"}, "--zipf needs --base"},
		{"bad url", []string{"steady", "--rate", "10", "--url", "a.b/c"}, "absolute http"},
		{"bad slo", []string{"steady", "--rate", "10", "--url", "http://a/", "--slo", "p95<250"}, "not a duration"},
		{"bad header", []string{"steady", "--rate", "10", "--url", "http://a/", "--header", "NoColon"}, `want "Name: value"`},
		{"capacity without slo", []string{"capacity", "--url", "http://a/"}, "--slo is required"},
		{"rush without to", []string{"rush", "--url", "http://a/"}, "--to must be positive"},
		{"missing cacert", []string{"steady", "--rate", "1", "--url", "https://a/", "--cacert", "/nonexistent.pem"}, "--cacert"},
		{"unknown flag", []string{"steady", "--bogus"}, "flag provided but not defined"},
		{"compare without files", []string{"compare"}, "give one or more JSON reports"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tc.args...)
			if code != ExitUsage {
				t.Errorf("exit %d, want %d (stderr %q)", code, ExitUsage, stderr)
			}
			if !strings.Contains(stderr, tc.wantErr) {
				t.Errorf("stderr %q, want it to mention %q", stderr, tc.wantErr)
			}
		})
	}
}

func TestRunCLISteadyVerdictAndReports(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Token") != "t1" || r.Host != "example.test" {
			w.WriteHeader(http.StatusForbidden)
		}
	})
	dir := t.TempDir()
	jsonPath, htmlPath := filepath.Join(dir, "out", "r.json"), filepath.Join(dir, "out", "r.html")
	common := []string{"steady", "--rate", "100", "--duration", "300ms", "--url", srv.URL + "/x",
		"--header", "X-Token: t1", "--header", "Host: example.test"}

	code, stdout, stderr := runCLI(t, append(common, "--slo", "p99<2s,errors=0", "--json", jsonPath, "--html", htmlPath)...)
	if code != ExitOK {
		t.Fatalf("exit %d, want 0; stdout %s stderr %s", code, stdout, stderr)
	}
	for _, want := range []string{"steady: 100 req/s for 300ms", "hits 30, successful 30, errors 0", "SLO held"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil || len(rep.Results) != 1 || rep.Results[0].OK != 30 || !rep.Results[0].Verdict.Held {
		t.Errorf("json report %s: %v", b, err)
	}
	if h, err := os.ReadFile(htmlPath); err != nil || !strings.Contains(string(h), "<svg") {
		t.Errorf("html report missing charts: %v", err)
	}

	code, stdout, _ = runCLI(t, append(common, "--slo", "p50<1us", "--quiet")...)
	if code != ExitViolated {
		t.Errorf("violated SLO: exit %d, want %d", code, ExitViolated)
	}
	if strings.TrimSpace(stdout) == "" || !strings.HasPrefix(stdout, "SLO VIOLATED: p50") || strings.Count(stdout, "\n") != 1 {
		t.Errorf("quiet output %q, want the one verdict line", stdout)
	}

	// compare merges saved reports into one table.
	code, stdout, stderr = runCLI(t, "compare", "--html", filepath.Join(dir, "cmp.html"), jsonPath, jsonPath)
	if code != ExitOK || strings.Count(stdout, "\n") != 3 || !strings.Contains(stdout, "req/s") {
		t.Errorf("compare exit %d, stdout %q stderr %q, want a header and 2 rows", code, stdout, stderr)
	}
}

// TestRunCLICrowdOriginCounts asks two new objects from 20 clients each at
// once and reads the origin's request counters around the run.
func TestRunCLICrowdOriginCounts(t *testing.T) {
	var mu sync.Mutex
	counts := map[string]int64{"/old": 7}
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path == "/__origin/counts" {
			json.NewEncoder(w).Encode(map[string]any{"total": 0, "paths": counts})
			return
		}
		counts[r.URL.Path]++ // no cache in front: every request reaches the origin
	})
	dir := t.TempDir()
	code, stdout, stderr := runCLI(t, "crowd", "--clients", "20", "--url", srv.URL+"/a", "--url", srv.URL+"/b",
		"--origin-counts", srv.URL+"/__origin/counts", "--json", filepath.Join(dir, "c.json"), "--name", "crowd cold")
	if code != ExitOK {
		t.Fatalf("exit %d: %s %s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "crowd cold: burst of 40 requests within 1ms") ||
		!strings.Contains(stdout, "origin requests 40 (/a 20, /b 20)") || !strings.Contains(stdout, "hits 40, successful 40") {
		t.Errorf("stdout:\n%s\nwant 40 hits and 20 origin requests per object", stdout)
	}
}

func TestMedianRuns(t *testing.T) {
	closed := func(name string, rate float64) *Result {
		return &Result{Name: name, Scenario: MaxThroughput(8, time.Second), AchievedRate: rate}
	}
	open := func(name string, p99 time.Duration) *Result {
		return &Result{Name: name, Scenario: Steady(100, time.Second), Latency: Latency{P99: p99}}
	}
	got := MedianRuns([]*Result{
		closed("a max", 10), open("a rate", 5*time.Millisecond), closed("a max", 30), open("a rate", time.Millisecond),
		closed("a max", 20), open("b rate", 9*time.Millisecond), open("a rate", 3*time.Millisecond), open("a rate", 4*time.Millisecond),
	})
	if len(got) != 3 {
		t.Fatalf("got %d results, want 3 (one per name)", len(got))
	}
	if got[0].Name != "a max" || got[0].AchievedRate != 20 {
		t.Errorf("closed loop median %s %.0f, want a max 20", got[0].Name, got[0].AchievedRate)
	}
	// 1, 3, 4, 5 ms: the better middle is 3 ms.
	if got[1].Name != "a rate" || got[1].Latency.P99 != 3*time.Millisecond {
		t.Errorf("open loop median %s %v, want a rate 3ms", got[1].Name, got[1].Latency.P99)
	}
	if got[2].Name != "b rate" {
		t.Errorf("third %s, want b rate", got[2].Name)
	}
}

// TestCompareScript checks the make-bench script parses and documents
// itself; running it needs the servers and takes minutes (see RESULTS.md).
func TestCompareScript(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not installed")
	}
	if out, err := exec.Command(bash, "-n", "compare.sh").CombinedOutput(); err != nil {
		t.Fatalf("bash -n compare.sh: %v\n%s", err, out)
	}
	out, err := exec.Command(bash, "compare.sh", "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "BENCH_ROUNDS") || !strings.Contains(string(out), "Every process started is stopped on exit") {
		t.Errorf("compare.sh --help: %v\n%s", err, out)
	}
	out, err = exec.Command(bash, "compare.sh", "--bogus").CombinedOutput()
	if code := exitCode(err); code != 2 || !strings.Contains(string(out), "unknown argument") {
		t.Errorf("compare.sh --bogus: exit %d, output %s; want 2 and a usage message", code, out)
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
