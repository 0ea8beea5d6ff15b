package edge

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// reloadFixture is a node started from a configuration file, reloadable
// (Options.LoadConfig reads the file again, as cmd/edgeshield does), with
// its log captured.
type reloadFixture struct {
	n    *Node
	path string
	logs *lockedBuffer
}

const reloadToken = "s3cret-token"

// reloadYAML is the fixture's file; extra is appended under the top level.
func reloadYAML(originURL, extra string) string {
	return fmt.Sprintf(`name: reload-test
listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
  token: %s
origin:
  url: %s
cache:
  max_bytes: 64MiB
  max_object_size: 8MiB
%s`, reloadToken, originURL, extra)
}

func newReloadFixture(t *testing.T, yaml string) *reloadFixture {
	t.Helper()
	f := &reloadFixture{path: filepath.Join(t.TempDir(), "edge.yaml"), logs: &lockedBuffer{}}
	f.write(t, yaml)
	load := func() (Config, error) {
		c, err := LoadConfig(f.path, nil)
		if err != nil {
			return Config{}, err
		}
		src, _ := os.ReadFile(f.path)
		return c, c.Validate(f.path, src)
	}
	cfg, err := load()
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	logger, level := NewLeveledLogger(cfg.Log, f.logs)
	n, err := New(cfg, Options{Logger: logger, LogLevel: level, LoadConfig: load})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := n.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		testHTTP.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	f.n = n
	return f
}

func (f *reloadFixture) write(t *testing.T, yaml string) {
	t.Helper()
	if err := os.WriteFile(f.path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
}

// reload POSTs /reload and decodes the answer.
func (f *reloadFixture) reload(t *testing.T) (int, ReloadResult, string) {
	t.Helper()
	r, body := do(t, "POST", "http://"+f.n.AdminAddr()+"/reload", "Authorization: Bearer "+reloadToken)
	var res ReloadResult
	if r.StatusCode == 200 {
		if err := json.Unmarshal([]byte(body), &res); err != nil {
			t.Fatalf("POST /reload: %v in %q", err, body)
		}
	}
	return r.StatusCode, res, body
}

func (f *reloadFixture) config(t *testing.T) string {
	t.Helper()
	r, body := get(t, "http://"+f.n.AdminAddr()+"/config", "Authorization: Bearer "+reloadToken)
	if r.StatusCode != 200 {
		t.Fatalf("GET /config: %d %s", r.StatusCode, body)
	}
	return body
}

// namedOrigin answers every request with its name and the X-Forwarded-For
// it received, never cacheable, so each request reaches the origin.
func namedOrigin(t *testing.T, name string) *testOrigin {
	return newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Origin", name)
		io.WriteString(w, name+" xff="+r.Header.Get("X-Forwarded-For"))
	})
}

// TestReloadAppliesLiveKeys: POST /reload applies what can change while the
// node serves (a new origin, a rate limit, trusted proxies, the cache size,
// the log level), names what needs a restart and keeps its running value,
// and GET /config shows the configuration in effect with the token hidden.
func TestReloadAppliesLiveKeys(t *testing.T) {
	o1, o2 := namedOrigin(t, "one"), namedOrigin(t, "two")
	f := newReloadFixture(t, reloadYAML(o1.srv.URL, ""))
	url := "http://" + f.n.Addr() + "/x"
	if _, body := get(t, url, "X-Forwarded-For: 1.2.3.4"); body != "one xff=127.0.0.1" {
		t.Fatalf("before the reload: %q, want the first origin and the client's X-Forwarded-For replaced", body)
	}
	next := reloadYAML(o2.srv.URL, `  hit_for_pass: 7s
  purge_ttl: 20m
server:
  trusted_proxies: [127.0.0.0/8]
  rate_limit:
    rate: 0.5
    burst: 3
log:
  level: debug
`)
	next = strings.Replace(next, "max_bytes: 64MiB", "max_bytes: 32MiB", 1)
	// One restart-only key too: the public listener.
	next = strings.Replace(next, "listen: 127.0.0.1:0\nadmin", "listen: 127.0.0.1:1\nadmin", 1)
	f.write(t, next)
	code, res, body := f.reload(t)
	if code != 200 {
		t.Fatalf("POST /reload: %d %s", code, body)
	}
	for _, k := range []string{"origin.url", "cache.max_bytes", "cache.hit_for_pass", "cache.purge_ttl", "server.trusted_proxies", "server.rate_limit.rate", "server.rate_limit.burst", "log.level"} {
		if !contains(strings.Join(res.Applied, " "), k) {
			t.Errorf("applied %v: %s missing", res.Applied, k)
		}
	}
	if strings.Join(res.RestartNeeded, ",") != "listen" {
		t.Errorf("restart_needed %v, want [listen]", res.RestartNeeded)
	}
	if _, body := get(t, url, "X-Forwarded-For: 1.2.3.4"); body != "two xff=1.2.3.4, 127.0.0.1" {
		t.Errorf("after the reload: %q, want the second origin and the trusted proxy's X-Forwarded-For extended", body)
	}
	get(t, "http://"+f.n.Addr()+"/y") // a new URL: the miss logs at debug ("not storing")
	if got := f.n.pipe.purges.TTL(); got != 20*time.Minute {
		t.Errorf("tombstone TTL %s after the reload, want 20m", got)
	}
	if got := f.n.Stats().MaxBytes; got != 32<<20 {
		t.Errorf("Stats.MaxBytes %d, want 32 MiB", got)
	}
	var limited bool
	for i := 0; i < 5 && !limited; i++ {
		r, _ := get(t, url)
		limited = r.StatusCode == http.StatusTooManyRequests
	}
	if !limited {
		t.Error("no 429 within 5 requests after a reload set rate 0.5/s, burst 3")
	}
	if !strings.Contains(f.logs.String(), "level=DEBUG") {
		t.Error("no debug line logged after the reload set log.level: debug")
	}
	conf := f.config(t)
	for _, want := range []string{"url: " + o2.srv.URL, "max_bytes: 32MiB", "hit_for_pass: 7s", "listen: 127.0.0.1:0", "token: <redacted>"} {
		if !strings.Contains(conf, want) {
			t.Errorf("GET /config lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, reloadToken) {
		t.Error("GET /config shows the admin token")
	}
}

// TestReloadWithoutChange: reloading an unchanged file applies nothing and
// says so with empty lists.
func TestReloadWithoutChange(t *testing.T) {
	o := namedOrigin(t, "one")
	f := newReloadFixture(t, reloadYAML(o.srv.URL, ""))
	r, body := do(t, "POST", "http://"+f.n.AdminAddr()+"/reload", "Authorization: Bearer "+reloadToken)
	if r.StatusCode != 200 || !strings.Contains(body, `"applied": []`) || !strings.Contains(body, `"restart_needed": []`) {
		t.Errorf("POST /reload of the same file: %d %s; want 200 with empty lists", r.StatusCode, body)
	}
}

// TestReloadRefusesInvalidFile: a file that does not load is refused with
// its file:line error; the running configuration stays in effect.
func TestReloadRefusesInvalidFile(t *testing.T) {
	o1, o2 := namedOrigin(t, "one"), namedOrigin(t, "two")
	f := newReloadFixture(t, reloadYAML(o1.srv.URL, ""))
	before := f.config(t)
	f.write(t, reloadYAML(o2.srv.URL, "  max_bytez: 1MiB\n"))
	code, _, body := f.reload(t)
	if code != http.StatusBadRequest || !strings.Contains(body, "cache.max_bytez") || !strings.Contains(body, f.path+":11") {
		t.Fatalf("POST /reload of a bad file: %d %s; want 400 naming the key and %s:11", code, body, f.path)
	}
	if after := f.config(t); after != before {
		t.Errorf("the configuration changed after a refused reload:\n%s\nwas:\n%s", after, before)
	}
	if _, b := get(t, "http://"+f.n.Addr()+"/x"); !strings.HasPrefix(b, "one") {
		t.Errorf("after a refused reload: %q, want the first origin still", b)
	}
	f.write(t, reloadYAML(o2.srv.URL, "  max_stale_on_error: 1x\n"))
	if code, _, body := f.reload(t); code != http.StatusBadRequest || !strings.Contains(body, "max_stale_on_error") {
		t.Errorf("POST /reload of a bad value: %d %s; want 400 naming the key", code, body)
	}
	if r, _ := do(t, "GET", "http://"+f.n.AdminAddr()+"/reload", "Authorization: Bearer "+reloadToken); r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /reload: %d, want 405", r.StatusCode)
	}
}

// TestReloadUnderLoad: requests keep being answered while reloads switch
// the origin back and forth (a new client and health check each time) and
// change its timeouts: no request fails, and each is answered by one of the
// two origins. Under -race this also checks the settings swap.
func TestReloadUnderLoad(t *testing.T) {
	o1, o2 := namedOrigin(t, "one"), namedOrigin(t, "two")
	f := newReloadFixture(t, reloadYAML(o1.srv.URL, ""))
	url := "http://" + f.n.Addr() + "/x"
	stop := make(chan struct{})
	var failed, served atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100_000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				r, err := testHTTP.Get(url)
				if err == nil {
					b, _ := io.ReadAll(r.Body)
					r.Body.Close()
					if r.StatusCode != 200 || !(strings.HasPrefix(string(b), "one") || strings.HasPrefix(string(b), "two")) {
						err = fmt.Errorf("%d %q", r.StatusCode, b)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				served.Add(1)
			}
		}()
	}
	for i := 0; i < 20; i++ {
		o := o1
		if i%2 == 0 {
			o = o2
		}
		f.write(t, strings.Replace(reloadYAML(o.srv.URL, ""), "origin:\n", fmt.Sprintf("origin:\n  header_timeout: %ds\n", 5+i), 1))
		if code, _, body := f.reload(t); code != 200 {
			t.Fatalf("reload %d: %d %s", i, code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed during 20 reloads (first: %v)", failed.Load(), failed.Load()+served.Load(), firstErr.Load())
	}
	if served.Load() < 20 {
		t.Errorf("only %d requests served during the reloads", served.Load())
	}
}

// TestReloadWithoutSource: a node built without Options.LoadConfig says so.
func TestReloadWithoutSource(t *testing.T) {
	o := namedOrigin(t, "one")
	n := newTestNode(t, o.srv.URL, nil, nil)
	if _, err := n.ReloadConfig(); err == nil {
		t.Fatal("ReloadConfig without a source: no error")
	}
	if r, _ := do(t, "POST", "http://"+n.AdminAddr()+"/reload"); r.StatusCode != http.StatusNotImplemented {
		t.Errorf("POST /reload without a source: %d, want 501", r.StatusCode)
	}
}

// TestRenderConfigRedactsSecrets: every secret field is hidden when set,
// and durations and sizes keep their configuration spelling, so that the
// rendered file loads back to the same configuration.
func TestRenderConfigRedactsSecrets(t *testing.T) {
	c := DefaultConfig()
	c.Admin.Token = "tok"
	c.Cluster.SecretKey = make([]byte, 32)
	c.Cluster.SecretKey[0] = 1
	b, err := RenderConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if strings.Count(s, "<redacted>") != 2 || strings.Contains(s, "tok\n") {
		t.Errorf("want admin.token and cluster.secret_key redacted:\n%s", s)
	}
	c.Admin.Token, c.Cluster.SecretKey = "", nil
	b, err = RenderConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseConfig(b, "rendered.yaml")
	if err != nil {
		t.Fatalf("the rendered default configuration does not load: %v\n%s", err, b)
	}
	l1, l2 := configLeaves(&c), configLeaves(&back)
	for k, v := range l1 {
		if fmt.Sprint(v.Interface()) != fmt.Sprint(l2[k].Interface()) {
			t.Errorf("%s: rendered and loaded back %v, want %v", k, l2[k].Interface(), v.Interface())
		}
	}
}

// TestReloadTLSNames: in internal mode a reload's new tls.names are issued
// and served without a restart, and GET /tls lists them.
func TestReloadTLSNames(t *testing.T) {
	o := namedOrigin(t, "one")
	storage := t.TempDir()
	tlsBlock := func(names string) string {
		return fmt.Sprintf("tls:\n  mode: internal\n  listen: 127.0.0.1:0\n  http: redirect\n  http3: false\n  storage: %s\n  names: [%s]\n", storage, names)
	}
	f := newReloadFixture(t, reloadYAML(o.srv.URL, tlsBlock("a.reload.test")))
	f.write(t, reloadYAML(o.srv.URL, tlsBlock("a.reload.test, b.reload.test")))
	code, res, body := f.reload(t)
	if code != 200 || strings.Join(res.Applied, ",") != "tls.names" {
		t.Fatalf("POST /reload: %d %s; want tls.names applied", code, body)
	}
	var conn *tls.Conn
	waitFor(t, "a certificate for b.reload.test", 20*time.Second, func() bool {
		c, err := tls.Dial("tcp", f.n.TLSAddr(), &tls.Config{ServerName: "b.reload.test", InsecureSkipVerify: true})
		if err == nil {
			conn = c
		}
		return err == nil
	})
	defer conn.Close()
	if _, b := get(t, "http://"+f.n.AdminAddr()+"/tls", "Authorization: Bearer "+reloadToken); !strings.Contains(b, `"b.reload.test"`) {
		t.Errorf("GET /tls does not list the added name:\n%s", b)
	}
	if got := conn.ConnectionState().PeerCertificates[0].DNSNames; !slices.Contains(got, "b.reload.test") {
		t.Errorf("certificate names %v, want b.reload.test", got)
	}
}
