package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeshield/edgeshield/bench"
)

// TestDockerComposeRollingUpgrade runs configs/docker-compose.yml under a
// naive client (round robin over the 3 edges, no retries, half keep-alive,
// half a new connection per request, 300 req/s as in issue 13) and upgrades
// the edges one after the other the documented way: `docker cp` a binary of
// another version to /edgeshield, `docker kill --signal USR2`. Each
// container keeps running (its PID 1 supervises the upgrade), reports the
// new version, and sees 3 members; the client sees 0 failed requests.
//
// With EDGESHIELD_MEASURE_RESTART=1 it first measures the old way on the
// same cluster and load, a rolling `compose restart` (SIGTERM, drain,
// start), and logs both counts (bench/RESULTS.md records them).
func TestDockerComposeRollingUpgrade(t *testing.T) {
	const token = "upgrade-e2e-token"
	env := []string{"EDGESHIELD_ADMIN_TOKEN=" + token, "EDGESHIELD_ORIGIN_PORT=" + freePort(t)}
	var edges, admins []string
	for i := 1; i <= 3; i++ {
		pub, admin := freePort(t), freePort(t)
		edges, admins = append(edges, "http://127.0.0.1:"+pub), append(admins, "127.0.0.1:"+admin)
		env = append(env, fmt.Sprintf("EDGESHIELD_EDGE%d_PORT=%s", i, pub), fmt.Sprintf("EDGESHIELD_EDGE%d_ADMIN_PORT=%s", i, admin))
	}
	p := upCompose(t, composeFile, env)
	for i := range 3 {
		p.waitHealthy(fmt.Sprintf("edge-%d", i+1), 1, 90*time.Second)
		waitClusterOf(t, admins[i], token, "")
	}
	if os.Getenv("EDGESHIELD_MEASURE_RESTART") == "1" {
		r := rollUnderLoad(t, edges, func(i int) {
			p.must("restart", fmt.Sprintf("edge-%d", i+1))
			p.waitHealthy(fmt.Sprintf("edge-%d", i+1), 1, 90*time.Second)
			waitClusterOf(t, admins[i], token, "")
		})
		t.Logf("rolling restart (compose restart, one edge at a time): %s", summary(r))
	}
	bin := buildVersion(t, "upgraded-e2e")
	r := rollUnderLoad(t, edges, func(i int) {
		svc := fmt.Sprintf("edge-%d", i+1)
		id := p.must("ps", "-q", svc)
		if out, err := docker(time.Minute, "cp", bin, id+":/edgeshield"); err != nil {
			t.Fatalf("docker cp: %v: %s", err, out)
		}
		if out, err := docker(time.Minute, "kill", "--signal", "USR2", id); err != nil {
			t.Fatalf("docker kill --signal USR2: %v: %s", err, out)
		}
		waitClusterOf(t, admins[i], token, "upgraded-e2e")
		if st, _ := docker(20*time.Second, "inspect", "-f", "{{.State.Running}} {{.RestartCount}}", id); st != "true 0" {
			t.Errorf("%s after the upgrade: running, restarts = %q; want the same container running, never restarted", svc, st)
		}
	})
	t.Logf("rolling upgrade (docker cp + docker kill --signal USR2, one edge at a time): %s", summary(r))
	for _, res := range r {
		if res.Errors != 0 || res.Sent == 0 {
			t.Errorf("rolling upgrade, %s: %d of %d requests failed (%v), want 0", res.Name, res.Errors, res.Sent, res.ErrorKinds)
		}
	}
}

// rollUnderLoad runs the naive load across edges while step(i) is applied
// to each edge in turn, with 3 s of load before, between and after.
func rollUnderLoad(t *testing.T, edges []string, step func(i int)) []*bench.Result {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	results := naiveLoad(t, ctx, edges)
	for i := range edges {
		time.Sleep(3 * time.Second)
		step(i)
	}
	time.Sleep(3 * time.Second)
	stop()
	return results()
}

// naiveLoad is the client of issue 13's measurement: round robin over the
// edges, no retries, 300 req/s (200 on keep-alive connections, 100 with a
// new connection each). The returned function waits for the results.
func naiveLoad(t *testing.T, ctx context.Context, edges []string) func() []*bench.Result {
	t.Helper()
	var urls []string
	for _, e := range edges {
		urls = append(urls, e+"/css/site.css", e+"/dyn/roll?size=4096&h.Cache-Control=max-age%3D2")
	}
	targets, err := bench.RoundRobin(urls...)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	results := make([]*bench.Result, 2)
	for i, rate := range []float64{200, 100} {
		r, err := bench.New(bench.Config{Targets: targets, DisableKeepAlive: i == 1, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			defer func() { done <- struct{}{} }()
			res, _ := r.Run(ctx, bench.Steady(rate, 30*time.Minute))
			if res != nil {
				res.Name = [2]string{"keep-alive", "new connection per request"}[i]
			}
			results[i] = res
		}()
	}
	return func() []*bench.Result {
		<-done
		<-done
		for i, r := range results {
			if r == nil {
				t.Fatalf("load %d returned no result", i)
			}
		}
		return results
	}
}

func summary(rs []*bench.Result) string {
	var parts []string
	sent, failed := int64(0), int64(0)
	for _, r := range rs {
		sent += r.Sent
		failed += r.Errors
		parts = append(parts, fmt.Sprintf("%s %d/%d failed %v", r.Name, r.Errors, r.Sent, nonZero(r.ErrorKinds)))
	}
	return fmt.Sprintf("%d of %d failed (%s)", failed, sent, strings.Join(parts, "; "))
}

func nonZero(m map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// waitClusterOf waits until the edge whose admin is addr answers /healthz
// with version (any when "") and sees 3 members alive.
func waitClusterOf(t *testing.T, addr, token, version string) {
	t.Helper()
	pollUntil(t, addr+" to run version "+version+" and see 3 members", 90*time.Second, func() (bool, string) {
		var h struct{ Version string }
		if err := getJSON("http://"+addr+"/healthz", token, &h); err != nil {
			return false, err.Error()
		}
		if version != "" && h.Version != version {
			return false, "version " + h.Version
		}
		v, _, err := adminView(addr, token)
		return err == nil && v.Alive == 3, fmt.Sprintf("%+v %v", v, err)
	})
}

func getJSON(url, token string, v any) error {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// buildVersion builds the static binary the image has, with another
// edge.Version, for the upgrade.
func buildVersion(t *testing.T, version string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "edgeshield")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X github.com/edgeshield/edgeshield/edge.Version="+version, "-o", bin, "./cmd/edgeshield")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	return bin
}
