package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeshield/edgeshield/bench"
)

// TestUpgradeUnderLoadFailsNoRequest: a real node (the built binary, demo
// origin) under steady load, half on keep-alive connections and half on a
// new connection per request, is upgraded 5 times with `edgeshield upgrade
// --pid-file`: not one request fails or is reset, the pid changes each time,
// and exactly one process is left, which SIGTERM stops.
func TestUpgradeUnderLoadFailsNoRequest(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	e := startBinary(t)
	pids := []int{e.pid(t)}
	loadCtx, stopLoad := context.WithCancel(context.Background())
	results := e.load(t, loadCtx, 250, 150)
	time.Sleep(time.Second) // load before the first upgrade, too
	for i := range 5 {
		out, err := exec.Command(e.bin, "upgrade", "--pid-file", e.pidFile, "--timeout", "60s").CombinedOutput()
		if err != nil {
			t.Fatalf("upgrade %d: %v: %s\n--- node log ---\n%s", i+1, err, out, e.log.String())
		}
		pid := e.pid(t)
		if pid == pids[len(pids)-1] || alive(pids[len(pids)-1]) {
			t.Fatalf("upgrade %d: pid file %d (before %d, still alive: %v); want a new pid and the old one gone", i+1, pid, pids[len(pids)-1], alive(pids[len(pids)-1]))
		}
		if !strings.Contains(string(out), fmt.Sprintf("handed over to pid %d", pid)) {
			t.Errorf("upgrade %d printed %q, want it to name pid %d", i+1, out, pid)
		}
		pids = append(pids, pid)
	}
	time.Sleep(time.Second)
	stopLoad()
	for _, r := range results() {
		t.Logf("%s: %d sent in %v, %d ok, errors %v", r.Name, r.Sent, r.Elapsed.Round(time.Millisecond), r.OK, r.ErrorKinds)
		if r.Errors != 0 || r.OK != r.Sent || r.Sent == 0 {
			t.Errorf("%s: %d of %d requests failed through 5 upgrades (%v), want 0\n--- node log ---\n%s", r.Name, r.Errors, r.Sent, r.ErrorKinds, e.log.String())
		}
	}
	if got := e.running(); len(got) != 1 || got[0] != pids[5] {
		t.Fatalf("processes of the binary after 5 upgrades: %v, want only %d", got, pids[5])
	}
	e.stop(t, pids[5])
}

// TestUpgradeToABrokenBinaryKeepsServing: when the new binary exits at
// start, the running process logs it and keeps serving without a failed
// request; once the binary is fixed the next upgrade succeeds.
func TestUpgradeToABrokenBinaryKeepsServing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	e := startBinary(t)
	old := e.pid(t)
	good := e.bin + ".good"
	if err := os.Link(e.bin, good); err != nil {
		t.Fatal(err)
	}
	broken := e.bin + ".broken"
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho broken build >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(broken, e.bin); err != nil {
		t.Fatal(err)
	}
	loadCtx, stopLoad := context.WithCancel(context.Background())
	results := e.load(t, loadCtx, 200, 50)
	time.Sleep(500 * time.Millisecond)
	out, err := exec.Command(good, "upgrade", "--pid-file", e.pidFile, "--timeout", "5s").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "still runs") {
		t.Errorf("upgrade to a broken binary: err %v, output %q; want a failure saying the old process still runs", err, out)
	}
	if !strings.Contains(e.log.String(), "upgrade failed, still serving") || !strings.Contains(e.log.String(), "broken build") {
		t.Errorf("node log does not report the failed upgrade:\n%s", e.log.String())
	}
	if pid := e.pid(t); pid != old || !alive(old) {
		t.Errorf("after the failed upgrade the pid file says %d (alive %v), want %d still serving", pid, alive(old), old)
	}
	if err := os.Rename(good, e.bin); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(e.bin, "upgrade", "--pid-file", e.pidFile, "--timeout", "60s").CombinedOutput(); err != nil {
		t.Fatalf("upgrade to the fixed binary: %v: %s\n%s", err, out, e.log.String())
	}
	stopLoad()
	for _, r := range results() {
		if r.Errors != 0 || r.Sent == 0 {
			t.Errorf("%s: %d of %d requests failed (%v), want 0", r.Name, r.Errors, r.Sent, r.ErrorKinds)
		}
	}
	if got := e.running(); len(got) != 1 || got[0] == old {
		t.Fatalf("processes after the fixed upgrade: %v, want one new one (not %d)", got, old)
	}
	e.stop(t, e.pid(t))
}

// TestSuperviseUpgradesAndStops: `run --supervise` (PID 1's mode in a
// container) keeps its own pid while the worker is upgraded on SIGUSR2 to
// the supervisor, and SIGTERM stops the worker and the supervisor with 0.
func TestSuperviseUpgradesAndStops(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	e := startBinary(t, "--supervise")
	sup := e.cmd.Process.Pid
	worker := e.pid(t)
	if worker == sup {
		t.Fatalf("pid file names the supervisor %d, want its worker", sup)
	}
	loadCtx, stopLoad := context.WithCancel(context.Background())
	results := e.load(t, loadCtx, 200, 50)
	for i := range 2 {
		syscall.Kill(sup, syscall.SIGUSR2)
		waitTrue(t, fmt.Sprintf("upgrade %d of the worker", i+1), 60*time.Second, func() bool {
			p, err := readPID(e.pidFile)
			return err == nil && p != worker && !alive(worker) && strings.Contains(e.log.String(), fmt.Sprintf("worker %d handed over to %d", worker, p))
		})
		worker = e.pid(t)
	}
	stopLoad()
	for _, r := range results() {
		if r.Errors != 0 || r.Sent == 0 {
			t.Errorf("%s: %d of %d requests failed (%v), want 0", r.Name, r.Errors, r.Sent, r.ErrorKinds)
		}
	}
	if got := e.running(); len(got) != 2 {
		t.Errorf("processes: %v, want the supervisor %d and the worker %d", got, sup, worker)
	}
	syscall.Kill(sup, syscall.SIGTERM)
	select {
	case err := <-e.exited:
		if err != nil {
			t.Errorf("supervisor exited with %v after SIGTERM, want 0\n%s", err, e.log.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("supervisor did not exit after SIGTERM")
	}
	if got := e.running(); len(got) != 0 {
		t.Errorf("processes left after SIGTERM: %v", got)
	}
}

// edgeProc is a built binary running `edgeshield run` in front of the demo
// origin on loopback, with a pid file.
type edgeProc struct {
	bin, pidFile, url string
	admin             string // admin host:port
	cmd               *exec.Cmd
	log               *syncBuffer
	exited            chan error // the first process's exit
}

// startBinary builds the binary into a temporary directory and runs it; every
// process of that binary (the upgrades' too) is killed when the test ends.
func startBinary(t *testing.T, extra ...string) *edgeProc {
	t.Helper()
	return startBinaryEnv(t, nil, extra...)
}

// startBinaryEnv is startBinary with variables added to the environment.
func startBinaryEnv(t *testing.T, env []string, extra ...string) *edgeProc {
	t.Helper()
	dir := t.TempDir()
	e := &edgeProc{bin: filepath.Join(dir, "edgeshield"), pidFile: filepath.Join(dir, "edgeshield.pid"), log: &syncBuffer{}}
	if out, err := exec.Command("go", "build", "-o", e.bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	pub, adm := "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t)
	e.url, e.admin = "http://"+pub, adm
	args := append([]string{"run", "--listen", pub, "--admin", adm, "--pid-file", e.pidFile, "--handover-grace", "1s"}, extra...)
	e.cmd = exec.Command(e.bin, args...)
	e.cmd.Env = append(append(os.Environ(), "EDGESHIELD_SERVER_DRAIN_DELAY=0s"), env...)
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.exited = make(chan error, 1)
	go func() { e.exited <- e.cmd.Wait() }()
	t.Cleanup(func() {
		for _, pid := range e.running() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	waitTrue(t, "the node to serve and write its pid file", 30*time.Second, func() bool {
		if _, err := readPID(e.pidFile); err != nil {
			return false
		}
		resp, err := http.Get(e.url + "/css/site.css")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	return e
}

func (e *edgeProc) pid(t *testing.T) int {
	t.Helper()
	pid, err := readPID(e.pidFile)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// running lists the live processes executing this test's binary.
func (e *edgeProc) running() []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink("/proc/" + ent.Name() + "/exe")
		if err == nil && strings.HasPrefix(exe, filepath.Dir(e.bin)+"/") && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stop sends SIGTERM to pid and waits until no process of the binary is left.
func (e *edgeProc) stop(t *testing.T, pid int) {
	t.Helper()
	syscall.Kill(pid, syscall.SIGTERM)
	waitTrue(t, "every process to exit after SIGTERM", 60*time.Second, func() bool { return len(e.running()) == 0 })
	if _, err := os.Stat(e.pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file after SIGTERM: %v, want it removed", err)
	}
}

// load runs two open-loop generators against the node until ctx ends: one
// on keep-alive connections, one opening a connection per request. The
// returned function waits for and returns their results.
func (e *edgeProc) load(t *testing.T, ctx context.Context, keepAlive, fresh float64) func() []*bench.Result {
	t.Helper()
	return loadURLs(t, ctx, keepAlive, fresh, e.url+"/css/site.css", e.url+"/dyn/up?size=2048&h.Cache-Control=max-age%3D1", e.url+"/img/hero-1m.jpg")
}

// loadURLs is load over any URLs, in turn.
func loadURLs(t *testing.T, ctx context.Context, keepAlive, fresh float64, urls ...string) func() []*bench.Result {
	t.Helper()
	targets, err := bench.RoundRobin(urls...)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make([]*bench.Result, 2)
	for i, rate := range []float64{keepAlive, fresh} {
		r, err := bench.New(bench.Config{Targets: targets, DisableKeepAlive: i == 1, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, _ := r.Run(ctx, bench.Steady(rate, 10*time.Minute))
			if res != nil {
				res.Name = [2]string{"keep-alive", "new connection per request"}[i]
			}
			results[i] = res
		}()
	}
	return func() []*bench.Result {
		wg.Wait()
		for i, r := range results {
			if r == nil {
				t.Fatalf("load %d returned no result", i)
			}
		}
		return results
	}
}

// syncBuffer collects a process's output from its writer goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestUpgradeInClusterKeepsMembership: two clustered nodes (built binaries,
// gossip and peer listeners on loopback) under load with misses forwarded
// between them. Node b is upgraded twice, then to a broken binary: after
// each upgrade both see 2 members alive (the new process bound the gossip
// port its predecessor released and joined under the same name), after the
// failed one b has taken its gossip port back, and no request failed.
func TestUpgradeInClusterKeepsMembership(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	ga, gb := "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t)
	clusterEnv := func(name, gossip string) []string {
		return []string{"EDGESHIELD_NAME=" + name, "EDGESHIELD_CLUSTER_ENABLED=true", "EDGESHIELD_CLUSTER_BIND=" + gossip,
			"EDGESHIELD_CLUSTER_PEER_LISTEN=" + "127.0.0.1:" + freePort(t), `EDGESHIELD_CLUSTER_SEEDS=["` + ga + `", "` + gb + `"]`,
			"EDGESHIELD_CLUSTER_REJOIN_INTERVAL=2s"}
	}
	a := startBinaryEnv(t, clusterEnv("a", ga))
	b := startBinaryEnv(t, clusterEnv("b", gb))
	both := func(what string) {
		t.Helper()
		for _, e := range []*edgeProc{a, b} {
			waitTrue(t, e.admin+" to see a and b alive "+what, 30*time.Second, func() bool {
				v, _, err := adminView(e.admin, "")
				return err == nil && v.Alive == 2 && v.state("a") == "alive" && v.state("b") == "alive"
			})
		}
	}
	both("at start")
	ctx, stopLoad := context.WithCancel(context.Background())
	results := loadURLs(t, ctx, 200, 50, a.url+"/dyn/c?size=1024&h.Cache-Control=max-age%3D1", b.url+"/dyn/c?size=1024&h.Cache-Control=max-age%3D1",
		a.url+"/dyn/d?size=1024&h.Cache-Control=max-age%3D1", b.url+"/dyn/d?size=1024&h.Cache-Control=max-age%3D1")
	for i := range 2 {
		old := b.pid(t)
		if out, err := exec.Command(b.bin, "upgrade", "--pid-file", b.pidFile).CombinedOutput(); err != nil {
			t.Fatalf("upgrade %d of b: %v: %s\n%s", i+1, err, out, b.log.String())
		}
		if b.pid(t) == old {
			t.Fatalf("upgrade %d: pid unchanged", i+1)
		}
		both(fmt.Sprintf("after upgrade %d", i+1))
	}
	good := b.bin + ".good"
	if err := os.Link(b.bin, good); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b.bin+".broken", []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(b.bin+".broken", b.bin); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(b.pid(t), syscall.SIGUSR2)
	waitTrue(t, "b to log the failed upgrade", 30*time.Second, func() bool { return strings.Contains(b.log.String(), "upgrade failed, still serving") })
	if !strings.Contains(b.log.String(), "gossip resumed") {
		t.Errorf("b did not take its gossip port back after the failed upgrade:\n%s", b.log.String())
	}
	both("after the failed upgrade")
	time.Sleep(time.Second)
	stopLoad()
	for _, r := range results() {
		t.Logf("%s: %d sent, errors %v", r.Name, r.Sent, r.ErrorKinds)
		if r.Errors != 0 || r.Sent == 0 {
			t.Errorf("%s: %d of %d requests failed (%v), want 0", r.Name, r.Errors, r.Sent, r.ErrorKinds)
		}
	}
	os.Rename(good, b.bin)
	b.stop(t, b.pid(t))
	a.stop(t, a.pid(t))
}

// waitTrue is pollUntil for a condition without a detail.
func waitTrue(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	pollUntil(t, what, d, func() (bool, string) { return cond(), "" })
}
