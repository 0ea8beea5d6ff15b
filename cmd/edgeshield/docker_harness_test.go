package main

// Harness for the Docker end-to-end tests in docker_test.go: it builds the
// static binary and the image from the repository's Dockerfile once per test
// binary, and starts clusters of real containers (demo origin + edges) on a
// private network. Everything it creates carries the run's unique id and is
// removed by t.Cleanup (containers, networks) or TestMain (image), also when a
// test fails.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// dockerRun holds what TestMain must remove after every test ran.
type dockerRun struct {
	id string // unique per test binary run; part of every name we create

	once   sync.Once
	image  string // image tag once built
	tmpDir string // build context
	err    error  // why the image could not be built
	skip   string // why Docker cannot be used here (empty: it can)
}

// dockerState is the per-process state of the Docker harness; it is set once in
// TestMain and read-only afterwards apart from the sync.Once it guards.
var dockerState = &dockerRun{id: randomHex(4)}

func TestMain(m *testing.M) {
	code := m.Run()
	dockerState.cleanup()
	os.Exit(code)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}

// docker runs the docker CLI with a bound on its runtime and returns its
// trimmed combined output.
func docker(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		return s, fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, s)
	}
	return s, nil
}

// requireImage skips the test when Docker is unusable (fails instead when
// CI=true) and returns the tag of the freshly built image.
func requireImage(t *testing.T) string {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	if testing.Short() && !ci {
		t.Skip("docker end-to-end tests skipped in -short mode")
	}
	dockerState.once.Do(dockerState.build)
	if dockerState.skip != "" {
		if ci {
			t.Fatalf("CI=true but docker is unusable: %s", dockerState.skip)
		}
		t.Skipf("docker end-to-end tests skipped: %s (set CI=true to make this a failure)", dockerState.skip)
	}
	if dockerState.err != nil {
		t.Fatalf("building the image: %v", dockerState.err)
	}
	return dockerState.image
}

func (r *dockerRun) build() {
	if _, err := exec.LookPath("docker"); err != nil {
		r.skip = "no docker command on PATH"
		return
	}
	if _, err := docker(20*time.Second, "info", "--format", "{{.ServerVersion}}"); err != nil {
		r.skip = "docker daemon unreachable: " + err.Error()
		return
	}
	root, err := moduleRoot()
	if err != nil {
		r.err = err
		return
	}
	r.tmpDir, err = os.MkdirTemp("", "edgeshield-image-")
	if err != nil {
		r.err = err
		return
	}
	// The Dockerfile COPYs bin/image/{edgeshield,ca-certificates.crt}
	// (what `make image` produces); build the same layout in a private
	// context so a concurrent `make image` or test run cannot interfere.
	stage := filepath.Join(r.tmpDir, "bin", "image")
	if err := os.MkdirAll(stage, 0o755); err != nil {
		r.err = err
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(stage, "edgeshield"), "./cmd/edgeshield")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		r.err = fmt.Errorf("go build: %w: %s", err, out)
		return
	}
	// Roots are only needed for https origins; the tests use http, so an
	// empty bundle keeps the build working on hosts without one.
	ca, _ := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err := os.WriteFile(filepath.Join(stage, "ca-certificates.crt"), ca, 0o644); err != nil {
		r.err = err
		return
	}
	tag := "edgeshield-e2e:" + r.id
	if _, err := docker(5*time.Minute, "build", "--label", "edgeshield.e2e="+r.id, "-f", filepath.Join(root, "Dockerfile"), "-t", tag, r.tmpDir); err != nil {
		r.err = err
		return
	}
	r.image = tag
}

func (r *dockerRun) cleanup() {
	if r.image != "" {
		if out, err := docker(time.Minute, "rmi", "-f", r.image); err != nil {
			fmt.Fprintln(os.Stderr, "docker_test: removing image:", err, out)
		}
	}
	if r.tmpDir != "" {
		os.RemoveAll(r.tmpDir)
	}
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the edgeshield module")
	}
	return filepath.Dir(gomod), nil
}

// Addresses inside the cluster network (a /24 picked per cluster).
const (
	originHostOctet = 10 // origin at .10, edge i (1-based) at .10+i
	adminToken      = "e2e-admin-token"
	testHost        = "cdn.test" // one site: the same Host on every edge
)

// dcNode is one running container.
type dcNode struct {
	container string // docker container name
	name      string // edge node name (cluster member name); "" for the origin
	ip        string // address on the cluster network
	public    string // 127.0.0.1:port published for 8080 (edges) or 8081 (origin)
	admin     string // 127.0.0.1:port published for 9090 (edges)
}

// dcCluster is a demo origin and edges on two networks: "front" (a plain
// bridge through which the test reaches the published ports) and "cluster"
// (internal, fixed subnet: gossip, shield hops and origin traffic). A
// partition cuts an edge's cluster network only, so the test still reaches
// it through front, like a user would while it is cut off from its peers.
type dcCluster struct {
	t       *testing.T
	image   string
	prefix  string // container/network name prefix
	front   string // network names
	network string
	subnet  string // "10.213.N" (a /24)
	origin  *dcNode
	edges   []*dcNode
	client  *http.Client
}

type dcOptions struct {
	edges         int
	originLatency time.Duration
}

var clusterSeq struct {
	mu sync.Mutex
	n  int
}

// startCluster starts the origin and o.edges edges and waits until every edge
// is ready and sees every edge alive.
func startCluster(t *testing.T, o dcOptions) *dcCluster {
	t.Helper()
	image := requireImage(t)
	clusterSeq.mu.Lock()
	clusterSeq.n++
	seq := clusterSeq.n
	clusterSeq.mu.Unlock()
	c := &dcCluster{
		t: t, image: image, prefix: fmt.Sprintf("es-e2e-%s-%d", dockerState.id, seq),
		client: &http.Client{
			Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 256, MaxConnsPerHost: 512},
			Timeout:   15 * time.Second,
		},
	}
	t.Cleanup(c.client.CloseIdleConnections)
	c.createNetworks()
	secret := make([]byte, 32)
	rand.Read(secret)
	key := base64.StdEncoding.EncodeToString(secret)

	c.origin = &dcNode{container: c.prefix + "-origin", ip: fmt.Sprintf("%s.%d", c.subnet, originHostOctet)}
	c.create(c.origin, []string{"-p", "127.0.0.1::8081"},
		"origin", "--listen", "0.0.0.0:8081", "--latency", o.originLatency.String())
	var seeds []string
	for i := 1; i <= o.edges; i++ {
		seeds = append(seeds, fmt.Sprintf("%q", fmt.Sprintf("%s.%d:7946", c.subnet, originHostOctet+i)))
	}
	for i := 1; i <= o.edges; i++ {
		e := &dcNode{
			container: fmt.Sprintf("%s-edge%d", c.prefix, i), name: fmt.Sprintf("edge-%d", i),
			ip: fmt.Sprintf("%s.%d", c.subnet, originHostOctet+i),
		}
		env := map[string]string{
			"NAME":                    e.name,
			"LISTEN":                  "0.0.0.0:8080",
			"ADMIN_LISTEN":            "0.0.0.0:9090",
			"ADMIN_TOKEN":             adminToken,
			"ORIGIN_URL":              "http://" + c.origin.ip + ":8081",
			"ORIGIN_HEADER_TIMEOUT":   "20s",
			"SERVER_DRAIN_DELAY":      "1s",
			"CLUSTER_ENABLED":         "true",
			"CLUSTER_BIND":            e.ip + ":7946",
			"CLUSTER_PEER_LISTEN":     e.ip + ":7947",
			"CLUSTER_SEEDS":           "[" + strings.Join(seeds, ", ") + "]", // YAML flow sequence
			"CLUSTER_SECRET_KEY":      key,
			"CLUSTER_REJOIN_INTERVAL": "2s",
		}
		var args []string
		args = append(args, "-p", "127.0.0.1::8080", "-p", "127.0.0.1::9090")
		for k, v := range env {
			args = append(args, "-e", "EDGESHIELD_"+k+"="+v)
		}
		c.create(e, args, "run")
		c.edges = append(c.edges, e)
	}
	all := append([]string{"start", c.origin.container}, containers(c.edges)...)
	c.mustDocker(time.Minute, all...)
	c.readPorts(c.origin)
	for _, e := range c.edges {
		c.readPorts(e)
	}
	for _, e := range c.edges {
		c.waitMembers(e, o.edges, 60*time.Second)
		c.waitFor(e.name+" ready", 30*time.Second, func() (bool, string) {
			st, body, err := c.adminGet(e, "/readyz")
			return err == nil && st == 200, fmt.Sprint(st, " ", body, err)
		})
	}
	return c
}

func containers(ns []*dcNode) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.container
	}
	return out
}

func (c *dcCluster) mustDocker(timeout time.Duration, args ...string) string {
	c.t.Helper()
	out, err := docker(timeout, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// createNetworks makes the front bridge and the internal cluster network;
// the latter's /24 is tried from a random start so concurrent runs (or
// networks of the host) do not collide.
func (c *dcCluster) createNetworks() {
	c.t.Helper()
	c.front = c.prefix + "-front"
	c.mustDocker(time.Minute, "network", "create", "--label", "edgeshield.e2e="+dockerState.id, c.front)
	c.t.Cleanup(func() { c.removeNetwork(c.front) })
	c.network = c.prefix + "-cluster"
	b := make([]byte, 1)
	rand.Read(b)
	var lastErr error
	for i := 0; i < 32; i++ {
		subnet := fmt.Sprintf("10.213.%d", (int(b[0])+i)%256)
		_, err := docker(time.Minute, "network", "create", "--internal", "--label", "edgeshield.e2e="+dockerState.id,
			"--subnet", subnet+".0/24", c.network)
		if err == nil {
			c.subnet = subnet
			c.t.Cleanup(func() { c.removeNetwork(c.network) })
			return
		}
		lastErr = err
		if !strings.Contains(strings.ToLower(err.Error()), "overlap") {
			break
		}
	}
	c.t.Fatalf("creating the cluster network: %v", lastErr)
}

func (c *dcCluster) removeNetwork(name string) {
	if out, err := docker(time.Minute, "network", "rm", name); err != nil {
		c.t.Errorf("cleanup: %v %s", err, out)
	}
}

// create makes the container on front (with its published ports) and
// attaches it to the cluster network at its fixed address before it starts,
// so it can bind its gossip address at once. Its removal is registered
// first, so a failure half-way still cleans up.
func (c *dcCluster) create(n *dcNode, dockerArgs []string, cmdArgs ...string) {
	c.t.Helper()
	c.t.Cleanup(func() {
		if c.t.Failed() {
			logs, _ := docker(30*time.Second, "logs", "--tail", "40", n.container)
			c.t.Logf("--- last log lines of %s ---\n%s", n.container, logs)
		}
		if out, err := docker(time.Minute, "rm", "-f", "-v", n.container); err != nil && !strings.Contains(out, "No such container") {
			c.t.Errorf("cleanup: %v", err)
		}
	})
	args := []string{"create", "--name", n.container, "--label", "edgeshield.e2e=" + dockerState.id, "--network", c.front}
	args = append(args, dockerArgs...)
	args = append(args, c.image)
	args = append(args, cmdArgs...)
	c.mustDocker(time.Minute, args...)
	c.connect(n)
}

// connect attaches n to the cluster network at its fixed address.
func (c *dcCluster) connect(n *dcNode) {
	c.t.Helper()
	c.mustDocker(time.Minute, "network", "connect", "--ip", n.ip, c.network, n.container)
}

func (c *dcCluster) disconnect(n *dcNode) {
	c.t.Helper()
	c.mustDocker(time.Minute, "network", "disconnect", c.network, n.container)
}

// readPorts reads the host ports Docker published; they change on restart.
func (c *dcCluster) readPorts(n *dcNode) {
	c.t.Helper()
	port := func(p string) string {
		out := c.mustDocker(time.Minute, "port", n.container, p)
		first, _, _ := strings.Cut(out, "\n")
		return strings.TrimSpace(first)
	}
	if n.name == "" {
		n.public = port("8081/tcp")
		return
	}
	n.public, n.admin = port("8080/tcp"), port("9090/tcp")
}

// waitFor polls cond every 100 ms until it holds or d passes; the string it
// returns explains the last failed attempt.
func (c *dcCluster) waitFor(what string, d time.Duration, cond func() (bool, string)) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after %s waiting for %s; last: %s", d, what, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *dcCluster) adminDo(method string, n *dcNode, path string) (int, string, error) {
	req, err := http.NewRequest(method, "http://"+n.admin+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func (c *dcCluster) adminGet(n *dcNode, path string) (int, string, error) {
	return c.adminDo(http.MethodGet, n, path)
}

// adminJSON GETs path and decodes the 200 answer into v.
func (c *dcCluster) adminJSON(n *dcNode, path string, v any) error {
	st, body, err := c.adminGet(n, path)
	if err != nil {
		return err
	}
	if st != http.StatusOK {
		return fmt.Errorf("GET %s on %s: status %d: %s", path, n.name, st, body)
	}
	return json.Unmarshal([]byte(body), v)
}

// clusterView is the part of GET /cluster the tests read.
type clusterView struct {
	Node    string `json:"node"`
	Alive   int    `json:"alive"`
	Members []struct {
		Name  string
		State string
	} `json:"members"`
}

func (v clusterView) state(name string) string {
	for _, m := range v.Members {
		if m.Name == name {
			return m.State
		}
	}
	return "absent"
}

func (c *dcCluster) view(n *dcNode) (clusterView, error) {
	var v clusterView
	err := c.adminJSON(n, "/cluster", &v)
	return v, err
}

// waitMembers waits until n sees want members alive.
func (c *dcCluster) waitMembers(n *dcNode, want int, d time.Duration) {
	c.t.Helper()
	c.waitFor(fmt.Sprintf("%s to see %d members alive", n.name, want), d, func() (bool, string) {
		v, err := c.view(n)
		return err == nil && v.Alive == want, fmt.Sprintf("%+v %v", v, err)
	})
}

// owner asks n which member owns the object at path on testHost.
func (c *dcCluster) owner(n *dcNode, path string) (string, error) {
	var doc struct {
		Owner struct{ Name string } `json:"owner"`
	}
	if err := c.adminJSON(n, "/cluster/owner?url="+url.QueryEscape("http://"+testHost+path), &doc); err != nil {
		return "", err
	}
	return doc.Owner.Name, nil
}

func (c *dcCluster) stats(n *dcNode) (map[string]any, error) {
	var m map[string]any
	err := c.adminJSON(n, "/stats", &m)
	return m, err
}

func (c *dcCluster) edge(name string) *dcNode {
	for _, e := range c.edges {
		if e.name == name {
			return e
		}
	}
	c.t.Fatalf("no edge named %q", name)
	return nil
}

// get requests path on testHost through n's public port.
func (c *dcCluster) get(n *dcNode, path string) (*http.Response, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+n.public+path, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Host = testHost
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// originCount reads the demo origin's request count for path (no query).
func (c *dcCluster) originCount(path string) (int, error) {
	resp, err := c.client.Get("http://" + c.origin.public + "/__origin/counts")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var doc struct {
		Paths map[string]int `json:"paths"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return 0, fmt.Errorf("decoding /__origin/counts: %w", err)
	}
	return doc.Paths[path], nil
}
