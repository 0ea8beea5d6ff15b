package edge

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		err  bool
	}{
		{"512MiB", 512 << 20, false},
		{"64 KiB", 64 << 10, false},
		{"1GB", 1e9, false},
		{"1.5GiB", 3 << 29, false},
		{"1048576", 1 << 20, false},
		{"10b", 10, false},
		{"", 0, true},
		{"12QB", 0, true},
		{"-1MiB", 0, true},
		{"NaN", 0, true},
		{"1e30TiB", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if (err != nil) != tt.err {
				t.Fatalf("ParseSize(%q) err = %v, want error %v", tt.in, err, tt.err)
			}
			if !tt.err && got != tt.want {
				t.Fatalf("ParseSize(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestDefaultConfigIsValid(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate("", nil); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	if c.Listen != "127.0.0.1:8080" || c.Origin.URL != "demo" || c.Cache.MaxBytes != 512<<20 {
		t.Fatalf("unexpected defaults: listen %q origin %q max_bytes %d", c.Listen, c.Origin.URL, c.Cache.MaxBytes)
	}
}

func TestConfigFileErrorsNameKeyAndLine(t *testing.T) {
	tests := []struct {
		name, yaml string
		wantLine   int
		wantKey    string
		wantMsg    string
	}{
		{"unknown top-level key", "listen: 127.0.0.1:1\nlisten_addr: x\n", 2, "listen_addr", "unknown key"},
		{"unknown nested key", "cache:\n  max_bytes: 1MiB\n  max_bytez: 2MiB\n", 3, "cache.max_bytez", `did you mean "max_bytes"`},
		{"bad size", "cache:\n  max_bytes: 12QB\n", 2, "cache.max_bytes", "invalid size"},
		{"bad duration", "origin:\n  connect_timeout: soon\n", 2, "origin.connect_timeout", "invalid duration"},
		{"bare number duration", "origin:\n  header_timeout: 30\n", 2, "origin.header_timeout", "invalid duration"},
		{"wrong type", "origin:\n  max_conns: many\n", 2, "origin.max_conns", "cannot unmarshal"},
		{"scalar for mapping", "cache: big\n", 1, "cache", "want a mapping"},
		{"validation: origin url", "origin:\n  url: ftp://x\n", 2, "origin.url", "want http://"},
		{"validation: object > cache", "cache:\n  max_bytes: 1MiB\n  max_object_size: 2MiB\n", 3, "cache.max_object_size", "at most cache.max_bytes"},
		{"validation: admin token", "admin:\n  listen: 0.0.0.0:9090\n", 0, "admin.token", "required when admin.listen"},
		{"validation: log level", "log:\n  level: loud\n", 2, "log.level", "want debug"},
		{"unknown key in list item", "tls:\n  certificates:\n    - cert: a\n      kee: b\n", 4, "tls.certificates[0].kee", `did you mean "key"`},
		{"unknown key in optional block", "tls:\n  on_demand:\n    allow: [a]\n    ratelimit: 3\n", 4, "tls.on_demand.ratelimit", `did you mean "rate_limit"`},
		{"validation: tls storage", "tls:\n  mode: internal\n", 0, "tls.storage", "required"},
		{"validation: check timeout > interval", "origin:\n  health_check:\n    interval: 1s\n    timeout: 2s\n", 4, "origin.health_check.timeout", "at most interval"},
		{"validation: check path", "origin:\n  health_check:\n    path: healthz\n", 3, "origin.health_check.path", "origin-form path"},
		{"validation: check fall", "origin:\n  health_check:\n    fall: -1\n", 3, "origin.health_check.fall", "must not be negative"},
		{"validation: check interval", "origin:\n  health_check:\n    interval: -1s\n", 3, "origin.health_check.interval", "must not be negative"},
		{"validation: origin timeout negative", "origin:\n  connect_timeout: -2s\n", 2, "origin.connect_timeout", "must not be negative"},
		{"validation: origin url path", "origin:\n  url: http://o.test/x\n", 2, "origin.url", "must not have a path"},
		{"validation: h2c on a redirecting listener", "server:\n  h2c: true\ntls:\n  mode: internal\n  storage: /tmp/x\n", 2, "server.h2c", "tls.http: serve"},
		{"validation: tls mode", "tls:\n  mode: magic\n  storage: /tmp/x\n", 2, "tls.mode", "want acme, internal, manual or off"},
		{"validation: tls manual needs certificates", "tls:\n  mode: manual\n  storage: /tmp/x\n", 0, "tls.certificates", "at least one certificate"},
		{"validation: tls certificate without key", "tls:\n  mode: manual\n  storage: /tmp/x\n  certificates:\n    - cert: a.pem\n", 5, "tls.certificates[0]", "both cert and key"},
		{"validation: tls on_demand allow", "tls:\n  mode: internal\n  storage: /tmp/x\n  on_demand:\n    allow: [ok.test, \"a b\"]\n", 5, "tls.on_demand.allow[1]", "not a host name"},
		{"validation: tls renew_check_interval", "tls:\n  mode: internal\n  storage: /tmp/x\n  renew_check_interval: -1m\n", 4, "tls.renew_check_interval", "negative"},
		{"cluster secret_key not base64", "cluster:\n  enabled: true\n  secret_key: \"abc!\"\n", 3, "cluster.secret_key", "not base64"},
		{"validation: cluster secret_key length", "cluster:\n  enabled: true\n  bind: 127.0.0.1:7946\n  peer_listen: 127.0.0.1:7947\n  secret_key: YWJj\n", 5, "cluster.secret_key", "must be 16, 24 or 32 bytes"},
		{"validation: cluster secret_key required", "cluster:\n  enabled: true\n  bind: 127.0.0.1:7946\n  peer_listen: 10.0.0.1:7947\n", 0, "cluster.secret_key", `"10.0.0.1:7947" is not`},
		{"validation: cluster advertise", "cluster:\n  enabled: true\n  bind: 0.0.0.0:7946\n  secret_key: MDEyMzQ1Njc4OWFiY2RlZg==\n", 0, "cluster.advertise", "required when bind"},
		{"validation: cluster bind", "cluster:\n  enabled: true\n  bind: gossip.test:7946\n", 3, "cluster.bind", "must be an IP address"},
		{"validation: cluster min_members", "cluster:\n  enabled: true\n  bind: 127.0.0.1:7946\n  peer_listen: 127.0.0.1:7947\n  min_members: -1\n", 5, "cluster.min_members", "must not be negative"},
		{"validation: accept_encodings not a token", "cache:\n  accept_encodings: [br, \"g zip\"]\n", 2, "cache.accept_encodings[1]", "not a token"},
		{"validation: accept_encodings repeat in a block list", "cache:\n  accept_encodings:\n    - gzip\n    - br\n    - x-gzip\n", 5, "cache.accept_encodings[2]", `"x-gzip" repeats "gzip"`},
		{"validation: accept_encodings identity", "cache:\n  accept_encodings: [identity]\n", 2, "cache.accept_encodings[0]", "not a content coding"},
		{"validation: accept_encodings star", "cache:\n  accept_encodings: [br, \"*\"]\n", 2, "cache.accept_encodings[1]", "not a content coding"},
		{"accept_encodings scalar", "cache:\n  accept_encodings: gzip\n", 2, "cache.accept_encodings", "cannot unmarshal"},
		{"validation: accept_encodings too many", "cache:\n  accept_encodings: [a, b, c, d, e, f, g, h, i]\n", 2, "cache.accept_encodings[8]", "at most 8"},
		{"validation: compress_types not a media type", "cache:\n  compress_types: [text/css, javascript]\n", 2, "cache.compress_types[1]", "want a media type"},
		{"validation: compress_types parameters", "cache:\n  compress_types: [\"text/html; charset=utf-8\"]\n", 2, "cache.compress_types[0]", "want a media type"},
		{"validation: compress_types everything", "cache:\n  compress_types:\n    - text/*\n    - \"*/*\"\n", 4, "cache.compress_types[1]", "would compress every type"},
		{"compress not a bool", "cache:\n  compress: maybe\n", 2, "cache.compress", "cannot unmarshal"},
		{"compress_min_size negative", "cache:\n  compress_min_size: -1\n", 2, "cache.compress_min_size", "invalid size"},
		{"validation: warm_keys negative", "cache:\n  warm_keys: -1\n", 2, "cache.warm_keys", "must be 0 (off)"},
		{"validation: warm_rate negative", "cache:\n  warm_rate: -5\n", 2, "cache.warm_rate", "objects per second"},
		{"warm_timeout bad", "cache:\n  warm_timeout: later\n", 2, "cache.warm_timeout", "invalid duration"},
		{"validation: trusted_proxies bad CIDR", "server:\n  trusted_proxies: [10.0.0.0/8, 10.0.0.0/33]\n", 2, "server.trusted_proxies[1]", "want a CIDR"},
		{"validation: trusted_proxies host name", "server:\n  trusted_proxies:\n    - 127.0.0.1/32\n    - proxy.example\n", 4, "server.trusted_proxies[1]", `"proxy.example"`},
		{"renamed max_body_bytes", "server:\n  max_body_bytes: 16MiB\n", 2, "server.max_body_bytes", "renamed to server.max_request_body"},
		{"max_request_body 0", "server:\n  max_request_body: 0\n", 2, "server.max_request_body", "must be positive"},
		{"negative rate", "server:\n  rate_limit:\n    rate: -1\n", 3, "server.rate_limit.rate", "must be 0 (off)"},
		{"rate without burst", "server:\n  rate_limit:\n    rate: 10\n    burst: 0\n", 4, "server.rate_limit.burst", "at least 1"},
		{"bad exempt", "server:\n  rate_limit:\n    exempt: [10.0.0.0/8, 10.0.0.0/33]\n", 3, "server.rate_limit.exempt[1]", "want a CIDR"},
		{"negative conns", "server:\n  max_conns_per_ip: -1\n", 2, "server.max_conns_per_ip", "must be 0 (off)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "edge.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(path, nil)
			if err == nil {
				src, _ := os.ReadFile(path)
				err = c.Validate(path, src)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("got error %v (%T), want *ConfigError", err, err)
			}
			if ce.Key != tt.wantKey {
				t.Errorf("key = %q, want %q (err %v)", ce.Key, tt.wantKey, err)
			}
			if tt.wantLine > 0 && (ce.Line != tt.wantLine || ce.File != path) {
				t.Errorf("position = %s:%d, want %s:%d (err %v)", ce.File, ce.Line, path, tt.wantLine, err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tt.wantMsg)
			}
		})
	}
}

func TestConfigPrecedence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.yaml")
	yaml := "listen: 127.0.0.1:7000\ncache:\n  max_bytes: 64MiB\n  max_object_size: 1MiB\norigin:\n  url: http://127.0.0.1:9\n"
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"EDGESHIELD_CACHE_MAX_BYTES=128MiB", "EDGESHIELD_ORIGIN_HEADER_TIMEOUT=2s", "EDGESHIELD_CONFIG=ignored", "HOME=/root"}
	c, err := LoadConfig(path, env)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:7000" {
		t.Errorf("listen = %q, want the file's 127.0.0.1:7000", c.Listen)
	}
	if c.Cache.MaxBytes != 128<<20 {
		t.Errorf("max_bytes = %s, want env's 128MiB", c.Cache.MaxBytes)
	}
	if c.Cache.MaxObjectSize != 1<<20 {
		t.Errorf("max_object_size = %s, want file's 1MiB", c.Cache.MaxObjectSize)
	}
	if c.Origin.HeaderTimeout != 2*time.Second {
		t.Errorf("header_timeout = %s, want env's 2s", c.Origin.HeaderTimeout)
	}
	if c.Origin.ConnectTimeout != 5*time.Second {
		t.Errorf("connect_timeout = %s, want default 5s", c.Origin.ConnectTimeout)
	}
}

func TestConfigEnvErrors(t *testing.T) {
	for _, env := range []string{"EDGESHIELD_CACHE_MAX_BYTEZ=1", "EDGESHIELD_CACHE_MAX_BYTES=lots"} {
		t.Run(env, func(t *testing.T) {
			_, err := LoadConfig("", []string{env})
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want *ConfigError", err)
			}
			name, _, _ := strings.Cut(env, "=")
			if ce.Key != name {
				t.Errorf("key = %q, want %q", ce.Key, name)
			}
		})
	}
}

func TestDocumentedConfigLoads(t *testing.T) {
	for _, f := range []string{"../configs/edge.yaml", "../configs/tls.yaml", "../configs/cluster-node1.yaml", "../configs/cluster-node2.yaml", "../configs/cluster-node3.yaml"} {
		c, err := LoadConfig(f, nil)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		src, _ := os.ReadFile(f)
		if err := c.Validate(f, src); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
}

// TestPackageDurationsTakeSign: a package's time.Duration key is read with
// its sign, and the package's Validate decides: tls.reload_interval -1s
// turns polling off, origin.header_timeout -1s is an error naming the key.
func TestPackageDurationsTakeSign(t *testing.T) {
	c, err := ParseConfig([]byte("tls:\n  reload_interval: -1s\n"), "x.yaml")
	if err != nil || c.TLS.ReloadInterval != -time.Second {
		t.Fatalf("reload_interval -1s: got %v, %v; want -1s (negative disables polling)", c.TLS.ReloadInterval, err)
	}
	if err := c.Validate("x.yaml", nil); err != nil {
		t.Errorf("reload_interval -1s: Validate: %v", err)
	}
	src := []byte("origin:\n  header_timeout: -1s\n")
	c, err = ParseConfig(src, "x.yaml")
	if err == nil {
		err = c.Validate("x.yaml", src)
	}
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Key != "origin.header_timeout" || ce.Line != 2 {
		t.Errorf("negative header_timeout: got %v, want a ConfigError for origin.header_timeout at line 2", err)
	}
}

// TestDefaultYAMLRestatesPackageDefaults: where default.yaml states a key of
// a block a package owns, the value is the package's default, so the two
// cannot drift apart (and a package setting needs no line in default.yaml).
func TestDefaultYAMLRestatesPackageDefaults(t *testing.T) {
	check := func(data []byte) []string {
		got := packageDefaults()
		if err := decodeStrict(&got, data, "default.yaml"); err != nil {
			t.Fatal(err)
		}
		want := packageDefaults()
		// origin.url has no package default (it is required); "demo" is
		// the edge's own.
		got.Origin.URL = ""
		var diffs []string
		for _, p := range []struct {
			block     string
			got, want any
		}{
			{"origin", got.Origin.ClientConfig, want.Origin.ClientConfig},
			{"origin.health_check", got.Origin.HealthCheck.HealthConfig, want.Origin.HealthCheck.HealthConfig},
			{"tls", got.TLS.Config, want.TLS.Config},
			{"cluster", got.Cluster.Config, want.Cluster.Config},
		} {
			if !reflect.DeepEqual(p.got, p.want) {
				diffs = append(diffs, fmt.Sprintf("%s: default.yaml gives %+v, the package %+v", p.block, p.got, p.want))
			}
		}
		return diffs
	}
	for _, d := range check(DefaultConfigYAML) {
		t.Error(d)
	}
	// The check sees a drift: a default.yaml that differs from a package.
	for _, y := range []string{"origin:\n  connect_timeout: 6s\n", "origin:\n  health_check:\n    fall: 4\n", "tls:\n  mode: internal\n", "cluster:\n  rejoin_interval: 31s\n"} {
		if len(check([]byte(y))) != 1 {
			t.Errorf("a default.yaml with %q: got no difference, want one", y)
		}
	}
}

// TestEveryKeyDocumented: configs/edge.yaml documents every key, except the
// tls and cluster blocks, which configs/tls.yaml and configs/cluster-node1.yaml
// document (each checked against the keys of the built-in defaults).
func TestEveryKeyDocumented(t *testing.T) {
	keys := func(t *testing.T, file string) map[string]bool {
		t.Helper()
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var root yaml.Node
		if err := yaml.Unmarshal(data, &root); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		out := map[string]bool{}
		var walk func(n *yaml.Node, prefix string)
		walk = func(n *yaml.Node, prefix string) {
			for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
				k := joinKey(prefix, n.Content[i].Value)
				out[k] = true
				walk(n.Content[i+1], k)
			}
		}
		walk(root.Content[0], "")
		return out
	}
	// owned collects the keys of the blocks packages own: their defaults
	// are the packages' (TestDefaultYAMLRestatesPackageDefaults).
	owned := map[string]bool{}
	var fields func(typ reflect.Type, prefix string, pkg bool, out *[]string)
	fields = func(typ reflect.Type, prefix string, pkg bool, out *[]string) {
		for tag, idx := range yamlFields(typ) {
			k := joinKey(prefix, tag)
			f := typ.FieldByIndex(idx)
			fromPkg := pkg || len(idx) > 1 && typ.Field(idx[0]).Type.PkgPath() != typ.PkgPath()
			if ft := f.Type; ft.Kind() == reflect.Struct && !implementsUnmarshaler(reflect.New(ft).Elem()) {
				fields(ft, k, fromPkg, out)
				continue
			}
			owned[k] = fromPkg
			*out = append(*out, k)
		}
	}
	var all []string
	fields(reflect.TypeOf(Config{}), "", false, &all)
	edge := keys(t, "../configs/edge.yaml")
	for _, k := range all {
		if !strings.HasPrefix(k, "tls.") && !strings.HasPrefix(k, "cluster.") && !edge[k] {
			t.Errorf("configs/edge.yaml does not document %s", k)
		}
	}
	defaults := keys(t, "default.yaml")
	for file, prefix := range map[string]string{"../configs/tls.yaml": "tls.", "../configs/cluster-node1.yaml": "cluster."} {
		doc := keys(t, file)
		for k := range defaults {
			if strings.HasPrefix(k, prefix) && !doc[k] {
				t.Errorf("%s does not document %s", file, k)
			}
		}
	}
	for _, k := range all {
		if !strings.HasPrefix(k, "tls.") && !owned[k] && !defaults[k] {
			t.Errorf("default.yaml has no default for %s", k)
		}
	}
}

// TestAcceptEncodingsConfig: cache.accept_encodings defaults to [br, gzip],
// and the environment sets it as it does every list key (cluster.seeds): a
// YAML flow sequence.
func TestAcceptEncodingsConfig(t *testing.T) {
	if got := DefaultConfig().Cache.AcceptEncodings; !slices.Equal(got, []string{"br", "gzip"}) {
		t.Errorf("default = %q, want [br gzip]", got)
	}
	path := filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(path, []byte("cache:\n  accept_encodings: [gzip]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		env  string // "" = none
		want []string
	}{
		{"", []string{"gzip"}},
		{"EDGESHIELD_CACHE_ACCEPT_ENCODINGS=[zstd, br, gzip]", []string{"zstd", "br", "gzip"}},
		{"EDGESHIELD_CACHE_ACCEPT_ENCODINGS=[]", []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			var env []string
			if tt.env != "" {
				env = []string{tt.env}
			}
			c, err := LoadConfig(path, env)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.Cache.AcceptEncodings, tt.want) {
				t.Errorf("accept_encodings = %q, want %q", c.Cache.AcceptEncodings, tt.want)
			}
			if err := c.Validate(path, nil); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
	t.Run("bad value from env", func(t *testing.T) {
		c, err := LoadConfig("", []string{"EDGESHIELD_CACHE_ACCEPT_ENCODINGS=[br, BR]"})
		if err != nil {
			t.Fatal(err)
		}
		err = c.Validate("", nil)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Key != "cache.accept_encodings[1]" || !strings.Contains(err.Error(), "repeats") {
			t.Errorf("got %v, want a ConfigError for cache.accept_encodings[1] (repeats)", err)
		}
	})
	t.Run("scalar from env", func(t *testing.T) {
		_, err := LoadConfig("", []string{"EDGESHIELD_CACHE_ACCEPT_ENCODINGS=gzip"})
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Key != "EDGESHIELD_CACHE_ACCEPT_ENCODINGS" {
			t.Errorf("got %v, want a ConfigError naming EDGESHIELD_CACHE_ACCEPT_ENCODINGS (lists are YAML: [gzip])", err)
		}
	})
}

// TestNewLeavesDemoToTheCaller: the node never starts the demo origin
// itself (cmd/edgeshield does, and passes its URL); New says so plainly.
func TestNewLeavesDemoToTheCaller(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen, cfg.Admin.Listen = "127.0.0.1:0", "127.0.0.1:0"
	n, err := New(cfg, Options{Logger: testLogger(t)})
	if err == nil {
		n.Shutdown(context.Background())
		t.Fatal(`New with origin.url "demo" succeeded; want an error telling the caller to resolve it`)
	}
	if !strings.Contains(err.Error(), "demo") {
		t.Errorf("error %q does not name the demo origin", err)
	}
}
