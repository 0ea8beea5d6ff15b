package edge

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// readLog returns the lines of the access log once want of them are there
// (the log flushes every second).
func readLog(t *testing.T, path string, want int) []string {
	t.Helper()
	var lines []string
	waitFor(t, "access log lines", 10*time.Second, func() bool {
		f, err := os.Open(path)
		if err != nil {
			return false
		}
		defer f.Close()
		lines = lines[:0]
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		return len(lines) >= want
	})
	return lines
}

func TestAccessLogCombined(t *testing.T) {
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/private" {
			w.Header().Set("Cache-Control", "private")
		} else {
			w.Header().Set("Cache-Control", "max-age=60")
		}
		w.Write([]byte("hello"))
	})
	path := filepath.Join(t.TempDir(), "access.log")
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) { c.Log.Access = path })
	base := "http://" + n.Addr()
	warm(t, n, base+"/a?x=1", "User-Agent: ua \"quoted\" \\ \xff", "Referer: http://ref.example/")
	get(t, base+"/a?x=1")
	get(t, base+"/private")
	do(t, http.MethodHead, base+"/a?x=1")

	lines := readLog(t, path, 4)
	if len(lines) != 4 {
		t.Fatalf("got %d lines, want 4:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	line := regexp.MustCompile(`^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "(\S+) (\S+) HTTP/1\.1" (\d{3}) (\d+|-) "(.*)" "(.*)" (hit|stale|miss|pass|error) (\d+\.\d{6}) "(.+)"$`)
	want := []struct{ method, uri, status, bytes, outcome string }{
		{"GET", "/a?x=1", "200", "5", "miss"},
		{"GET", "/a?x=1", "200", "5", "hit"},
		{"GET", "/private", "200", "5", "pass"},
		{"HEAD", "/a?x=1", "200", "0", "hit"},
	}
	for i, w := range want {
		m := line.FindStringSubmatch(lines[i])
		if m == nil {
			t.Errorf("line %d does not match the combined format: %q", i, lines[i])
			continue
		}
		if m[1] != w.method || m[2] != w.uri || m[3] != w.status || m[4] != w.bytes || m[7] != w.outcome || m[9] != n.Addr() {
			t.Errorf("line %d: %q; want %s %s %s %s bytes, %s, host %s", i, lines[i], w.method, w.uri, w.status, w.bytes, w.outcome, n.Addr())
		}
	}
	// Client-controlled fields are escaped nginx's way: no forged quotes.
	if m := line.FindStringSubmatch(lines[0]); m != nil {
		if m[5] != "http://ref.example/" || m[6] != `ua \"quoted\" \\ \xff` {
			t.Errorf("referer %q, user agent %q; want the referer and the agent escaped", m[5], m[6])
		}
	}
}

func TestAccessLogJSONAndReopen(t *testing.T) {
	o := newTestOrigin(t, nil, static("hello", "Cache-Control: max-age=60"))
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) {
		c.Log.Access = path
		c.Log.AccessFormat = "json"
	})
	base := "http://" + n.Addr()
	warm(t, n, base+"/j", "User-Agent: \"\xff")
	lines := readLog(t, path, 1)
	var rec struct {
		Time, Remote, Host, Method, URI, Proto, Referer, Cache string
		UserAgent                                              string `json:"user_agent"`
		Status                                                 int
		Bytes                                                  *int64
		Duration                                               float64
	}
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatalf("line is not JSON: %v: %q", err, lines[0])
	}
	if _, err := time.Parse(time.RFC3339, rec.Time); err != nil || rec.Remote != "127.0.0.1" || rec.Method != "GET" ||
		rec.URI != "/j" || rec.Status != 200 || rec.Bytes == nil || *rec.Bytes != 5 || rec.Cache != "miss" ||
		rec.Duration <= 0 || rec.UserAgent != "\"\ufffd" || rec.Host != n.Addr() {
		t.Errorf("record %+v from %q", rec, lines[0])
	}

	// logrotate: move the file, SIGHUP (ReopenLogs), new lines go to a new file.
	rotated := filepath.Join(dir, "access.log.1")
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	get(t, base+"/j")
	if err := n.ReopenLogs(); err != nil {
		t.Fatal(err)
	}
	get(t, base+"/j")
	if got := readLog(t, rotated, 2); len(got) != 2 {
		t.Errorf("rotated file has %d lines, want 2 (the line logged before the reopen is in it)", len(got))
	}
	if got := readLog(t, path, 1); len(got) != 1 || !strings.Contains(got[0], `"cache":"hit"`) {
		t.Errorf("new file: %q, want the one hit logged after the reopen", got)
	}
}

func TestAccessLogBadPath(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen, cfg.Admin.Listen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Origin.URL = "http://127.0.0.1:1"
	cfg.Log.Access = filepath.Join(t.TempDir(), "missing-dir", "access.log")
	_, err := New(cfg, Options{Logger: testLogger(t)})
	if ce, ok := err.(*ConfigError); !ok || ce.Key != "log.access" {
		t.Fatalf("New with an access log in a missing directory: %v, want a ConfigError for log.access", err)
	}
}

// TestAccessLogEscaping: bytes a client controls never break a line or the
// JSON (control bytes cannot come through an HTTP client, so the function
// is tested on its own).
func TestAccessLogEscaping(t *testing.T) {
	in := []byte("a\"b\\c\x01\n\x7f\xffé")
	if got, want := string(appendEscaped(nil, in, false)), `a\"b\\c\x01\x0a\x7f\xff\xc3\xa9`; got != want {
		t.Errorf("combined: %s, want %s", got, want)
	}
	got := appendEscaped(nil, in, true)
	var s string
	if err := json.Unmarshal([]byte(`"`+string(got)+`"`), &s); err != nil || s != "a\"b\\c\x01\n\x7f\ufffdé" {
		t.Errorf("json: %s decodes to %q (%v)", got, s, err)
	}
}
