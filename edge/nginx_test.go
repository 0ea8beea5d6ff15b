package edge

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// startNginx runs a real nginx (Debian's nginx-light: gzip, no brotli) on a
// loopback port with its own prefix, config and document root under a temp
// directory, serving files (name -> content) with "Cache-Control: public,
// max-age=300", and stops it when the test ends. gzip is nginx's gzip
// setting for css and js: "off"; "on" as Debian's nginx.conf has it (with
// gzip_proxied at its default, off: nginx then never compresses a request
// that carries Via, as every request from a proxy does); "proxied", gzip on
// with gzip_proxied any. It skips when nginx is not installed, except under CI=true
// (.ci/run installs nginx-light), where a missing nginx fails the test.
func startNginx(t *testing.T, gzip string, files map[string]string) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr == nil {
			bin, err = "/usr/sbin/nginx", nil
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("nginx not found (CI must have nginx-light installed): %v", err)
		}
		t.Skip("nginx not installed (apt-get install nginx-light); skipping the real-nginx origin test")
	}
	dir := t.TempDir()
	for _, sub := range []string{"html", "logs", "tmp"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, "html", name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nginx binds it next; nothing else on loopback races for an ephemeral port this fast
	gz := "gzip " + gzip + ";"
	if gzip == "proxied" {
		gz = "gzip on; gzip_proxied any;"
	}
	tmp := filepath.Join(dir, "tmp")
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    types { text/css css; application/javascript js; image/png png; }
    default_type application/octet-stream;
    server {
        listen %[3]s;
        root %[1]s/html;
        %[4]s
        gzip_types text/css application/javascript;
        gzip_vary on;
        add_header Cache-Control "public, max-age=300";
    }
}
`, dir, tmp, addr, gz)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "logs", "error.log"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM) // fast shutdown
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "logs", "error.log"))
			t.Fatalf("nginx exited: %v\n%s", err, log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not listen on %s within 5s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "http://" + addr
}

// TestNginxOriginNeverIdentity: in front of a real nginx (no brotli, as
// Debian ships it), a browser never gets a stylesheet uncompressed. With
// nginx compressing for proxies, the normalised "br, gzip" lets nginx pick
// gzip, even with the edge's own compression off (the old rewrite to "br"
// got identity). With Debian's gzip settings nginx refuses to compress for a
// proxy (gzip_proxied off and our Via), and with gzip off it cannot: the
// edge compresses.
func TestNginxOriginNeverIdentity(t *testing.T) {
	css := cssBody(60 << 10)
	const png = "\x89PNG\r\n\x1a\n not really a png, but nginx only reads the extension"
	tests := []struct {
		name      string
		nginxGzip string
		edgeOff   bool
		ae        string
		wantCE    string
		wantUnder int // bytes on the wire, at most
	}{
		{"nginx gzip_proxied any, edge compress off, chromium", "proxied", true, browserAE, "gzip", 20 << 10},
		{"nginx gzip_proxied any, chromium", "proxied", false, browserAE, "gzip", 20 << 10},
		{"nginx gzip_proxied any, gzip-only", "proxied", false, "gzip, deflate", "gzip", 20 << 10},
		{"nginx gzip_proxied any, curl", "proxied", false, "", "", len(css) + 1},
		{"nginx gzip as Debian, chromium", "on", false, browserAE, "br", 16 << 10},
		{"nginx gzip as Debian, gzip-only", "on", false, "gzip, deflate", "gzip", 20 << 10},
		{"nginx gzip off, chromium", "off", false, browserAE, "br", 16 << 10},
		{"nginx gzip off, gzip-only", "off", false, "gzip, deflate", "gzip", 20 << 10},
		{"nginx gzip off, curl", "off", false, "", "", len(css) + 1},
	}
	// One nginx per setting, shared by the subtests.
	files := map[string]string{"style.css": css, "logo.png": png}
	origins := map[string]string{}
	for _, g := range []string{"proxied", "on", "off"} {
		origins[g] = startNginx(t, g, files)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := origins[tt.nginxGzip]
			n := newTestNode(t, url, nil, func(c *Config) { c.Cache.Compress = !tt.edgeOff })
			for round := 0; round < 2; round++ {
				r, body := warm(t, n, "http://"+n.Addr()+"/style.css", aeHeaders(tt.ae)...)
				if r.StatusCode != 200 {
					t.Fatalf("round %d: status %d", round, r.StatusCode)
				}
				if got := r.Header.Get("Content-Encoding"); got != tt.wantCE {
					t.Fatalf("round %d: Content-Encoding %q (%d bytes), want %q", round, got, len(body), tt.wantCE)
				}
				if len(body) >= tt.wantUnder {
					t.Errorf("round %d: %d bytes on the wire, want under %d", round, len(body), tt.wantUnder)
				}
				if got := decode(t, r, body); got != css {
					t.Errorf("round %d: decoded %d bytes differ from the %d-byte file", round, len(got), len(css))
				}
				if round == 1 && !isHit(r) {
					t.Errorf("repeat: Cache-Status %q, want a hit", csOf(r))
				}
				t.Logf("round %d: %s %d bytes (file %d), Cache-Status %s", round, tt.wantCE, len(body), len(css), csOf(r))
			}
			// Already-compressed types stay as nginx sent them.
			r, body := get(t, "http://"+n.Addr()+"/logo.png", aeHeaders(browserAE)...)
			if r.Header.Get("Content-Encoding") != "" || body != png {
				t.Errorf("png: Content-Encoding %q, %d bytes, want the file as is", r.Header.Get("Content-Encoding"), len(body))
			}
		})
	}
}
