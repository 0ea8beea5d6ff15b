package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// composeProject is one `docker-compose -p NAME -f FILE` project of a test,
// taken down (containers, networks, volumes) by t.Cleanup.
type composeProject struct {
	t       *testing.T
	cli     []string
	file    string
	project string
	env     []string
}

// upCompose starts file under a unique project name with the test image
// and env (KEY=VALUE) added to the environment compose interpolates from.
func upCompose(t *testing.T, file string, env []string, upArgs ...string) *composeProject {
	t.Helper()
	image := requireImage(t)
	var cli []string
	if _, err := docker(20*time.Second, "compose", "version"); err == nil {
		cli = []string{"docker", "compose"}
	} else if _, err := exec.LookPath("docker-compose"); err == nil {
		cli = []string{"docker-compose"}
	} else if os.Getenv("CI") == "true" {
		t.Fatal("CI=true but neither `docker compose` nor `docker-compose` is installed")
	} else {
		t.Skip("no docker compose CLI")
	}
	p := &composeProject{t: t, cli: cli, file: file,
		project: fmt.Sprintf("es-e2e-%s-%s", dockerState.id, strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))),
		env:     append(os.Environ(), append([]string{"EDGESHIELD_IMAGE=" + image}, env...)...)}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := p.run(time.Minute, "logs", "--tail", "30")
			t.Logf("--- compose logs ---\n%s", out)
		}
		if out, err := p.run(2*time.Minute, "down", "-v", "-t", "2", "--remove-orphans"); err != nil {
			t.Errorf("cleanup: %v: %s", err, out)
		}
	})
	if out, err := p.run(3*time.Minute, append([]string{"up", "-d"}, upArgs...)...); err != nil {
		t.Fatalf("up: %v: %s", err, out)
	}
	return p
}

func (p *composeProject) run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	all := append(append(p.cli[1:len(p.cli):len(p.cli)], "-p", p.project, "-f", p.file), args...)
	cmd := exec.CommandContext(ctx, p.cli[0], all...)
	cmd.Env = p.env
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (p *composeProject) must(args ...string) string {
	p.t.Helper()
	out, err := p.run(time.Minute, args...)
	if err != nil {
		p.t.Fatalf("%s %v: %v: %s", strings.Join(p.cli, " "), args, err, out)
	}
	return out
}

// waitHealthy waits until Docker reports the service's container (index i,
// 1-based) healthy: the healthcheck, `edgeshield probe --once`, passed.
func (p *composeProject) waitHealthy(service string, i int, d time.Duration) {
	p.t.Helper()
	ids := strings.Fields(p.must("ps", "-q", service))
	if len(ids) < i {
		p.t.Fatalf("service %s: got containers %v, want at least %d", service, ids, i)
	}
	pollUntil(p.t, fmt.Sprintf("%s #%d healthy", service, i), d, func() (bool, string) {
		st, err := docker(20*time.Second, "inspect", "-f", "{{.State.Health.Status}}", ids[i-1])
		return err == nil && st == "healthy", st
	})
}

// adminView GETs /cluster on a published admin address with token.
func adminView(addr, token string) (clusterView, int, error) {
	var v clusterView
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/cluster", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return v, 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return v, resp.StatusCode, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return v, resp.StatusCode, json.Unmarshal(b, &v)
}

func pollUntil(t *testing.T, what string, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last: %s", d, what, why)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// TestDockerComposeUp brings up configs/docker-compose.yml as a user would
// (with the compose CLI, on ports chosen through the documented variables):
// every edge's healthcheck turns healthy, and the admin API answers on the
// published port with the token (401 without) and sees 3 members.
func TestDockerComposeUp(t *testing.T) {
	const token = "compose-e2e-token"
	env := []string{"EDGESHIELD_ADMIN_TOKEN=" + token, "EDGESHIELD_ORIGIN_PORT=" + freePort(t)}
	admins := map[string]string{}
	for i := 1; i <= 3; i++ {
		admin := freePort(t)
		admins[fmt.Sprintf("edge-%d", i)] = "127.0.0.1:" + admin
		env = append(env, fmt.Sprintf("EDGESHIELD_EDGE%d_PORT=%s", i, freePort(t)), fmt.Sprintf("EDGESHIELD_EDGE%d_ADMIN_PORT=%s", i, admin))
	}
	p := upCompose(t, composeFile, env)
	for name, addr := range admins {
		p.waitHealthy(name, 1, 90*time.Second)
		pollUntil(t, name+" to see 3 members", 60*time.Second, func() (bool, string) {
			v, _, err := adminView(addr, token)
			return err == nil && v.Alive == 3, fmt.Sprintf("%+v %v", v, err)
		})
		if _, st, _ := adminView(addr, ""); st != http.StatusUnauthorized {
			t.Errorf("%s admin without the token: got %d, want 401", name, st)
		}
	}
}

// TestDockerComposeScale brings up configs/docker-compose.scale.yml with
// --scale edge=3: the replicas find each other by the service name alone
// (no fixed addresses) and each sees 3 members.
func TestDockerComposeScale(t *testing.T) {
	const n = 3
	p := upCompose(t, composeScaleFile, []string{"EDGESHIELD_ADMIN_TOKEN=scale-token", "EDGESHIELD_CLUSTER_REJOIN_INTERVAL=2s"},
		"--scale", fmt.Sprintf("edge=%d", n))
	for i := 1; i <= n; i++ {
		addr := p.must("port", "--index="+strconv.Itoa(i), "edge", "9090")
		p.waitHealthy("edge", i, 90*time.Second)
		pollUntil(t, fmt.Sprintf("edge #%d (%s) to see %d members", i, addr, n), 60*time.Second, func() (bool, string) {
			v, _, err := adminView(addr, "scale-token")
			return err == nil && v.Alive == n, fmt.Sprintf("%+v %v", v, err)
		})
	}
}
