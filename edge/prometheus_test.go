package edge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const dashboardFile = "../configs/grafana-dashboard.json"

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	SchemaVersion int `json:"schemaVersion"`
	Inputs        []struct {
		Name, Type, PluginID string
	} `json:"__inputs"`
	Panels     []dashPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type dashPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"` // a collapsed row's
}

// loadDashboard reads configs/grafana-dashboard.json and returns its
// queries: every panel target's expr, and the series of the template
// variables' label_values.
func loadDashboard(t *testing.T) (exprs []string, vars []string) {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.SchemaVersion < 36 || len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" {
		t.Errorf("schemaVersion %d, inputs %+v: want >= 36 and one DS_PROMETHEUS input", d.SchemaVersion, d.Inputs)
	}
	ids := map[int]bool{}
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d used twice", p.ID)
			}
			ids[p.ID] = true
			if p.Type != "row" && (p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" || len(p.Targets) == 0) {
				t.Errorf("panel %q: want the ${DS_PROMETHEUS} datasource and a query", p.Title)
			}
			for _, tg := range p.Targets {
				exprs = append(exprs, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		// label_values(series, label) is Grafana's: the series is a query.
		m := regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`).FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("variable %s: %q, want label_values(series, label)", v.Name, v.Definition)
			continue
		}
		vars = append(vars, m[1])
	}
	return exprs, vars
}

var (
	reLabelList = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	reIdent     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promKeyword = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
		"group_right": true, "bool": true, "and": true, "or": true, "unless": true, "offset": true}
)

// promSeries returns the metric names a PromQL expression reads: the
// identifiers left once strings, label matchers, ranges, label lists,
// keywords and function calls are taken out.
func promSeries(expr string) []string {
	s := regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`).ReplaceAllString(expr, `""`)
	s = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`).ReplaceAllString(s, " ")
	s = reLabelList.ReplaceAllString(s, " ")
	var out []string
	for _, loc := range reIdent.FindAllStringIndex(s, -1) {
		name := s[loc[0]:loc[1]]
		if loc[0] > 0 && (s[loc[0]-1] == '.' || s[loc[0]-1] >= '0' && s[loc[0]-1] <= '9') {
			continue // the exponent or tail of a number
		}
		if rest := strings.TrimLeft(s[loc[1]:], " \t\n"); promKeyword[name] || strings.HasPrefix(rest, "(") {
			continue
		}
		out = append(out, name)
	}
	return out
}

func TestPromSeries(t *testing.T) {
	for expr, want := range map[string][]string{
		`sum by (instance) (rate(edgeshield_a_total{instance=~"$instance",le="0.25"}[$__rate_interval]))`: {"edgeshield_a_total"},
		`histogram_quantile(0.99, sum by (le, cache) (rate(x_bucket[5m])))`:                               {"x_bucket"},
		`a / on (instance) group_left (version) b or vector(1)`:                                           {"a", "b"},
		`count by (version) (edgeshield_info{job="a{b}"})`:                                                {"edgeshield_info"},
		`up == 1e3 and  nope`: {"up", "nope"},
	} {
		if got := promSeries(expr); !slices.Equal(got, want) {
			t.Errorf("promSeries(%q) = %q, want %q", expr, got, want)
		}
	}
}

// exportedSeries scrapes a node's /metrics and returns its sample names
// (a histogram's _bucket, _sum and _count) and their families.
func exportedSeries(t *testing.T, metricsURL string) (samples map[string]string) {
	t.Helper()
	samples = map[string]string{} // sample name → family
	r, b := get(t, metricsURL)
	if r.StatusCode != 200 {
		t.Fatalf("GET %s: %d", metricsURL, r.StatusCode)
	}
	parseExposition(t, b)
	var family string
	for _, line := range strings.Split(b, "\n") {
		if f, ok := strings.CutPrefix(line, "# HELP "); ok {
			family, _, _ = strings.Cut(f, " ")
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		samples[reIdent.FindString(line)] = family
	}
	return samples
}

// TestGrafanaDashboardSeries: every query of configs/grafana-dashboard.json
// reads only series a real node exports, and every family the node exports
// is on the dashboard: a dashboard that drifts from the metrics fails here.
func TestGrafanaDashboardSeries(t *testing.T) {
	o := newTestOrigin(t, nil, static("x", "Cache-Control: max-age=60"))
	n := newTestNode(t, o.srv.URL, nil, nil)
	get(t, "http://"+n.Addr()+"/a")
	samples := exportedSeries(t, "http://"+n.AdminAddr()+"/metrics")
	exprs, vars := loadDashboard(t)
	shown := map[string]bool{}
	for _, e := range append(exprs, vars...) {
		names := promSeries(e)
		if len(names) == 0 {
			t.Errorf("query %q reads no series", e)
		}
		for _, name := range names {
			fam, ok := samples[name]
			if !ok {
				t.Errorf("query %q reads %s, which the node does not export", e, name)
			}
			shown[fam] = true
		}
	}
	for _, fam := range samples {
		if !shown[fam] {
			t.Errorf("%s is exported but on no dashboard panel", fam)
		}
	}
}

// prometheus is a Prometheus server (Debian's prometheus package) started
// by a test on loopback, stopped when the test ends.
type prometheus struct {
	base string // http://127.0.0.1:port
	log  *bytes.Buffer
}

// startPrometheus runs prometheus with config (a prometheus.yml) and a
// temporary storage directory, and waits until it is ready. It skips the
// test outside CI when prometheus is not installed.
func startPrometheus(t *testing.T, config string) *prometheus {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("prometheus not installed (required when CI=true)")
		}
		t.Skip("prometheus not installed (Debian package prometheus): the scrape of a real node not checked")
	}
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := &prometheus{base: "http://" + addr, log: &bytes.Buffer{}}
	cmd := exec.Command(bin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = p.log, p.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }() //nolint:errcheck // the exit is reported by exited
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) //nolint:errcheck // gone already, maybe
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) //nolint:errcheck // as above
			<-exited
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := http.Get(p.base + "/-/ready")
		if err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return p
			}
		}
		select {
		case <-exited:
			t.Fatalf("prometheus exited:\n%s", p.log)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 30 s:\n%s", p.log)
		}
	}
}

// promSample is one element of an instant query's vector result.
type promSample struct {
	Metric map[string]string
	Value  float64
}

// query runs an instant query; it fails the test when Prometheus refuses it
// (a syntax error, an unknown function).
func (p *prometheus) query(t *testing.T, q string) []promSample {
	t.Helper()
	r, err := http.Get(p.base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatalf("query %q: %v", q, err)
	}
	defer r.Body.Close()
	var doc struct {
		Status, Error string
		Data          struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		}
	}
	if err := json.NewDecoder(r.Body).Decode(&doc); err != nil || doc.Status != "success" {
		t.Fatalf("query %q: %d %s %v", q, r.StatusCode, doc.Error, err)
	}
	var raw []struct {
		Metric map[string]string `json:"metric"`
		Value  [2]any            `json:"value"`
	}
	if doc.Data.ResultType != "vector" {
		t.Fatalf("query %q: a %s, want an instant vector", q, doc.Data.ResultType)
	}
	if err := json.Unmarshal(doc.Data.Result, &raw); err != nil {
		t.Fatalf("query %q: %v", q, err)
	}
	out := make([]promSample, 0, len(raw))
	for _, s := range raw {
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			t.Fatalf("query %q: value %v: %v", q, s.Value, err)
		}
		out = append(out, promSample{s.Metric, v})
	}
	return out
}

// value waits until q has exactly one sample that cond accepts (bounded),
// and returns it.
func (p *prometheus) value(t *testing.T, q string, cond func(float64) bool) float64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res := p.query(t, q)
		if len(res) == 1 && cond(res[0].Value) {
			return res[0].Value
		}
		if time.Now().After(deadline) {
			t.Fatalf("query %q: %+v after 30 s\nprometheus log:\n%s", q, res, p.log)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestPrometheusScrapesNode: a real Prometheus scrapes a node's admin
// /metrics with the admin token (and is refused without it); the series
// are queryable with the values the traffic implies; its
// histogram_quantile agrees with the console's percentiles; and every
// query of the Grafana dashboard parses and returns data.
func TestPrometheusScrapesNode(t *testing.T) {
	if _, err := exec.LookPath("prometheus"); err != nil {
		startPrometheus(t, "") // skips, or fails under CI=true
	}
	o := newTestOrigin(t, nil, static("x", "Cache-Control: max-age=600"))
	const token = "prom-token"
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) { c.Admin.Token = token })
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startPrometheus(t, fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: edgeshield
    authorization:
      type: Bearer
      credentials_file: %q
    static_configs:
      - targets: [%q]
  - job_name: edgeshield-notoken
    static_configs:
      - targets: [%q]
`, tokenFile, n.AdminAddr(), n.AdminAddr()))

	// Only this test talks to the public listener (Prometheus scrapes the
	// admin one, health checks go to the origin): each URL twice is
	// exactly 2×objects requests, objects misses and objects hits.
	const objects = 25
	for i := 0; i < objects; i++ {
		warm(t, n, fmt.Sprintf("http://%s/obj/%d", n.Addr(), i))
		if r, _ := get(t, fmt.Sprintf("http://%s/obj/%d", n.Addr(), i)); !isHit(r) {
			t.Fatalf("/obj/%d: second request not a hit (%s)", i, csOf(r))
		}
	}
	eq := func(want float64) func(float64) bool { return func(v float64) bool { return v == want } }
	p.value(t, `up{job="edgeshield"}`, eq(1))
	p.value(t, `up{job="edgeshield-notoken"}`, eq(0))
	p.value(t, `sum(edgeshield_requests_total{job="edgeshield"})`, eq(2*objects))
	p.value(t, `edgeshield_requests_total{job="edgeshield",proto="h1"}`, eq(2*objects))
	p.value(t, `edgeshield_cache_hits_total{job="edgeshield"}`, eq(objects))
	p.value(t, `edgeshield_cache_misses_total{job="edgeshield"}`, eq(objects))
	p.value(t, `edgeshield_request_duration_seconds_count{job="edgeshield",cache="hit"}`, eq(objects))
	p.value(t, `edgeshield_origin_up{job="edgeshield"}`, eq(1))
	p.value(t, `count(edgeshield_info{job="edgeshield",node="edge-test"})`, eq(1))
	if r := p.query(t, `edgeshield_requests_total{job="edgeshield-notoken"}`); len(r) != 0 {
		t.Errorf("the scrape without the token stored %v", r)
	}
	comparePercentiles(t, p, n)
	queryDashboard(t, p)
}

// comparePercentiles: the console's first poll (percentiles since the node
// started) and Prometheus's histogram_quantile over the same counts agree.
func comparePercentiles(t *testing.T, p *prometheus, n *Node) {
	t.Helper()
	var all LatencyRow
	for _, r := range n.api.consoleStatus().Latency {
		if r.Cache == "all" {
			all = r
		}
	}
	if all.P50 == nil {
		t.Fatalf("console: no latency figures: %+v", all)
	}
	for q, v := range map[string]*float64{"0.5": all.P50, "0.9": all.P90, "0.99": all.P99} {
		got := p.query(t, `histogram_quantile(`+q+`, sum by (le) (edgeshield_request_duration_seconds_bucket{job="edgeshield"}))`)
		if len(got) != 1 || math.Abs(got[0].Value-*v) > 1e-9*math.Max(1, *v) {
			t.Errorf("p%s: Prometheus %+v, console %v", strings.TrimPrefix(q, "0."), got, *v)
		}
	}
}

// queryDashboard runs every dashboard query, its variables set to every
// node, and waits (bounded) for each to return data.
func queryDashboard(t *testing.T, p *prometheus) {
	t.Helper()
	exprs, vars := loadDashboard(t)
	set := strings.NewReplacer(`$instance`, `.*`, `$__rate_interval`, `1m`)
	for _, e := range append(exprs, vars...) {
		q := set.Replace(e)
		deadline := time.Now().Add(15 * time.Second)
		for len(p.query(t, q)) == 0 {
			if time.Now().After(deadline) {
				t.Errorf("dashboard query returns no data: %s", q)
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
}
