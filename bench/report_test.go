package bench

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sampleReport runs a short rush against a loopback server that answers
// with a Cache-Status hit and fails every tenth request.
func sampleReport(t *testing.T) *Report {
	t.Helper()
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Status", "edge; hit")
		if strings.HasSuffix(r.URL.Path, "/bad") {
			w.WriteHeader(http.StatusBadGateway)
		}
		w.Write([]byte("hello"))
	})
	tg, err := Weighted([]WeightedURL{{srv.URL + "/ok", 9}, {srv.URL + "/bad", 1}})
	if err != nil {
		t.Fatal(err)
	}
	r := runner(t, Config{Targets: tg, BucketWidth: 250 * time.Millisecond}, "")
	rush, err := r.Run(context.Background(), Rush(20, 200, 1500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	steady, err := r.Run(context.Background(), Steady(100, 500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	steady.Name = "steady 100/s"
	slo, _ := ParseSLO("p99<1s,errors=0")
	v := slo.Evaluate(steady)
	steady.Verdict = &v
	return &Report{
		Title: "sample", Generated: time.Now(), Results: []*Result{rush, steady},
		Capacity: &CapacityResult{Rate: 100, Limit: 104, Bracketed: true, SLO: slo.String(), Best: steady, Steps: []*Result{steady, rush}},
	}
}

func TestTextAndJSONReports(t *testing.T) {
	rep := sampleReport(t)
	var text bytes.Buffer
	if err := WriteText(&text, rep.Results[0]); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"rush: 20 -> 200 req/s over 1.5s", "hits 165, successful", "status-5xx", "hits/day",
		"data in ", "cache hit ratio 100.0%", "latency min", "timeline", "offered/s"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	var table bytes.Buffer
	if err := WriteTable(&table, rep.Results); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(table.String(), "\n"); got != 3 {
		t.Errorf("table has %d lines, want header + 2:\n%s", got, table.String())
	}

	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	back, err := ReadReport(&js)
	if err != nil {
		t.Fatal(err)
	}
	a, b := rep.Results[0], back.Results[0]
	if a.Offered != b.Offered || a.Latency.P99 != b.Latency.P99 || len(a.Timeline) != len(b.Timeline) ||
		a.ErrorKinds[KindStatus5xx] != b.ErrorKinds[KindStatus5xx] || back.Capacity.Rate != 100 {
		t.Errorf("JSON round trip changed figures: offered %d/%d p99 %v/%v buckets %d/%d",
			a.Offered, b.Offered, a.Latency.P99, b.Latency.P99, len(a.Timeline), len(b.Timeline))
	}
	if got, want := b.LatencyAt(99), a.LatencyAt(99); got < want {
		t.Errorf("decoded LatencyAt(99) %v below the measured %v", got, want)
	}
}

func TestHTMLReportRendersInChromium(t *testing.T) {
	rep := sampleReport(t)
	dir := t.TempDir()
	page := filepath.Join(dir, "report.html")
	f, err := os.Create(page)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteHTML(f, rep); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	html, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	// 4 charts per run, 3 comparison charts, 1 capacity chart.
	if got, want := strings.Count(string(html), `<figure class="chart"`), 4*2+3+1; got != want {
		t.Errorf("%d chart figures, want %d", got, want)
	}
	if got := strings.Count(string(html), "<svg"); got != 12 {
		t.Errorf("%d inline svg elements, want 12", got)
	}
	for _, id := range []string{"run0-latency", "run0-latency-vs-rate", "run0-throughput", "run0-errors", "compare-throughput", "compare-p50", "compare-p99", "capacity"} {
		if !strings.Contains(string(html), `id="`+id+`"`) {
			t.Errorf("no chart with id %q", id)
		}
	}

	bin, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium not installed (required when CI=true)")
		}
		t.Skip("chromium not installed: HTML rendering not checked")
	}
	shot := filepath.Join(dir, "shot.png")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--screenshot="+shot, "--window-size=1280,2000", "file://"+page)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Logf("report kept at %s", page)
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	pf, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	img, err := png.Decode(pf)
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 2000 {
		t.Errorf("screenshot %v, want 1280x2000", b)
	}
	if keep := os.Getenv("BENCH_KEEP_SCREENSHOT"); keep != "" {
		if b, err := os.ReadFile(shot); err == nil {
			os.WriteFile(keep, b, 0o644) //nolint:errcheck // debugging aid
		}
	}
	if v, dark := luminance(img); v < 100 || dark < 0.005 {
		t.Errorf("screenshot looks blank: luminance variance %.1f, dark pixel share %.4f", v, dark)
	}
}

// luminance returns the variance of pixel luminance (0..255) and the
// share of dark pixels (lines and text) of img.
func luminance(img image.Image) (variance, dark float64) {
	b := img.Bounds()
	var sum, sq, n, nd float64
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, _ := img.At(x, y).RGBA()
			l := (0.299*float64(r) + 0.587*float64(g) + 0.114*float64(bl)) / 257
			sum += l
			sq += l * l
			n++
			if l < 128 {
				nd++
			}
		}
	}
	mean := sum / n
	return sq/n - mean*mean, nd / n
}

func TestGroupRuns(t *testing.T) {
	named := func(names ...string) []*Result {
		rs := make([]*Result, len(names))
		for i, n := range names {
			rs[i] = &Result{Name: n}
		}
		return rs
	}
	tests := []struct {
		name           string
		runs           []*Result
		systems, cases string
	}{
		{"grid", named("nginx hit-1k", "varnish hit-1k", "nginx zipf", "varnish zipf"), "nginx,varnish", "hit-1k,zipf"},
		{"missing cell", named("a x", "b x", "a y"), "a,b", "x,y"},
		{"unsplittable name", named("a x", "solo"), "", ""},
		{"duplicate", named("a x", "a x"), "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sys, cases, _ := groupRuns(tc.runs)
			if got := strings.Join(sys, ","); got != tc.systems {
				t.Errorf("systems %q, want %q", got, tc.systems)
			}
			if got := strings.Join(cases, ","); got != tc.cases {
				t.Errorf("cases %q, want %q", got, tc.cases)
			}
		})
	}
	// A grouped report renders one bar series per system.
	var b strings.Builder
	rs := named("nginx hit-1k", "varnish hit-1k", "nginx zipf", "varnish zipf")
	if err := WriteHTML(&b, &Report{Title: "g", Results: rs}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), ">nginx<") || !strings.Contains(b.String(), ">varnish<") {
		t.Error("grouped comparison charts lack the system legend entries")
	}
}
