package edge

import (
	"cmp"
	_ "embed"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/edgeshield/edgeshield/cache"
	"github.com/edgeshield/edgeshield/cluster"
	"github.com/edgeshield/edgeshield/edge/certs"
	"github.com/edgeshield/edgeshield/internal/conf"
	"github.com/edgeshield/edgeshield/origin"
	"gopkg.in/yaml.v3"
)

// DefaultConfigYAML is the embedded configuration `edgeshield run` uses when
// no --config is given: an edge on 127.0.0.1:8080 in front of the built-in
// demo origin. configs/edge.yaml documents every key.
//
//go:embed default.yaml
var DefaultConfigYAML []byte

// Config is a node's whole configuration. Its YAML form is documented in
// configs/edge.yaml; every key can also be set from the environment as
// EDGESHIELD_<PATH> (dots become underscores: EDGESHIELD_CACHE_MAX_BYTES).
// Precedence, lowest first: built-in defaults, the config file, environment,
// command-line flags.
type Config struct {
	// Name identifies this node in Cache-Status and Via. "" means the host name.
	Name string `yaml:"name"`
	// Listen is the public HTTP address. Default "127.0.0.1:8080".
	Listen string `yaml:"listen"`
	// Origin describes the one upstream this node shields.
	Origin OriginConfig `yaml:"origin"`
	// Cache bounds the in-memory store and sets caching policy knobs.
	Cache CacheConfig `yaml:"cache"`
	// Server holds the public listener's limits and timeouts.
	Server ServerConfig `yaml:"server"`
	// Admin is the operator listener (health, stats, purge).
	Admin AdminConfig `yaml:"admin"`
	// TLS terminates HTTPS (certmagic); configs/tls.yaml documents it.
	TLS TLSConfig `yaml:"tls"`
	// Cluster joins a gossip cluster that shields the origin together.
	Cluster ClusterConfig `yaml:"cluster"`
	// Log selects level and format of the structured log on stderr.
	Log LogConfig `yaml:"log"`
}

// OriginConfig describes the origin. The client's keys (url, timeouts,
// max_conns, max_conn_wait) are origin.ClientConfig's own, documented and
// defaulted there; the rest are the edge's.
type OriginConfig struct {
	// ClientConfig's URL is "http://host:port" or "https://host[:port]", or
	// "demo" for the caller to start the built-in demo origin (see New).
	origin.ClientConfig `yaml:",inline"`
	// HostHeader selects the Host sent upstream: "pass" (the client's Host,
	// default), "origin" (the origin URL's host), or any literal host name.
	HostHeader string `yaml:"host_header"`
	// CAFile adds a PEM bundle to the roots trusted for an https origin.
	CAFile string `yaml:"ca_file"`
	// HealthCheck probes the origin in the background.
	HealthCheck HealthCheckConfig `yaml:"health_check"`
}

// HealthCheckConfig is the active origin health check: origin.HealthConfig
// (interval, timeout, fall, rise; default origin.DefaultHealthConfig) plus
// what the check requests. With it, a node whose origin is down answers
// misses at once (stale or 502) instead of making every client wait for a
// failing connection, and its readiness follows the origin back up even
// when no traffic arrives.
type HealthCheckConfig struct {
	origin.HealthConfig `yaml:",inline"`
	// Path, when set (e.g. "/healthz"), makes each check a GET of it that
	// must answer 2xx or 3xx; "" only opens a connection (and the TLS
	// handshake for https). Default "".
	Path string `yaml:"path"`
}

// CacheConfig bounds the store and tunes policy.
type CacheConfig struct {
	// MaxBytes bounds the store (cost = body + headers + key). Default 512MiB.
	MaxBytes Size `yaml:"max_bytes"`
	// MaxObjectSize: larger responses stream through without being stored.
	// Default 64MiB.
	MaxObjectSize Size `yaml:"max_object_size"`
	// KeyIgnoreQuery drops the query string from cache keys. Default false.
	KeyIgnoreQuery bool `yaml:"key_ignore_query"`
	// StoreSetCookie allows storing responses that carry Set-Cookie (the
	// cookie is stripped from the stored copy). Default false: such
	// responses are not stored, as nginx and Varnish do, unless the origin
	// says Cache-Control: private="Set-Cookie" (RFC 9111 §5.2.2.7).
	StoreSetCookie bool `yaml:"store_set_cookie"`
	// TargetedField is an extra CDN-targeted Cache-Control field name
	// (RFC 9213) that wins over CDN-Cache-Control, e.g.
	// "Edgeshield-Cache-Control". CDN-Cache-Control is always honoured.
	TargetedField string `yaml:"targeted_field"`
	// MaxStaleOnError lets stale content be served this long past expiry
	// when the origin fails, even without stale-if-error. Never applies to
	// must-revalidate responses. Default 1h; 0 disables.
	MaxStaleOnError Duration `yaml:"max_stale_on_error"`
	// HitForPass remembers an uncacheable key this long, so later requests
	// go straight to the origin instead of queueing behind one. Default 30s.
	HitForPass Duration `yaml:"hit_for_pass"`
	// HeuristicFraction of (Date - Last-Modified) used as freshness when the
	// origin gives none (RFC 9111 §4.2.2). Default 0.1.
	HeuristicFraction float64 `yaml:"heuristic_fraction"`
	// MaxHeuristic caps heuristic freshness. Default 24h.
	MaxHeuristic Duration `yaml:"max_heuristic"`
	// PurgeTTL is how long purge tombstones are kept, for lookups and for
	// the cluster's exchange alike (one set, at most
	// cache.DefaultMaxTombstones). Default 10m.
	PurgeTTL Duration `yaml:"purge_ttl"`
	// OffheapMinSize: stored bodies at least this large are kept outside
	// the Go heap, each in a memory file (Linux memfd), and sent to plain
	// HTTP clients with sendfile(2), without a copy through user space.
	// Default 128KiB (at 64 KiB a copy costs no more than sendfile's page
	// handling, measured in bench/RESULTS.md); 0 keeps every body on the heap. Each such body holds a
	// file descriptor; at most half the open-file limit is used this way,
	// larger bodies beyond that stay on the heap.
	OffheapMinSize Size `yaml:"offheap_min_size"`
	// AcceptEncodings are the content codings this cache knows, best first.
	// A client's Accept-Encoding on a GET or HEAD is rewritten, before
	// lookup, to the set of them it accepts, in this order ("br, gzip" for
	// every current browser, "gzip" for a gzip-only client), or removed when
	// it accepts none; so "Vary: Accept-Encoding" stores one variant per set
	// of capabilities rather than one per browser's spelling of the field,
	// and the origin still chooses among every coding the client takes (see
	// cache.AcceptedEncodings). Default [br, gzip]; an empty list turns the
	// rewrite off (and cache.compress with it) and the field passes through
	// untouched. Tokens only, distinct, at most 8, never "identity" or "*".
	AcceptEncodings []string `yaml:"accept_encodings"`
	// Compress lets the edge compress a response itself when the origin
	// sends identity: a storable 200 GET response of a type in
	// CompressTypes, without Content-Encoding or Cache-Control no-transform,
	// for a request whose normalised Accept-Encoding takes br or gzip (the
	// first of AcceptEncodings the edge can make). The body is coded as it
	// streams in and stored coded, once per variant, with Content-Encoding,
	// "Vary: Accept-Encoding" (on every variant of such a response) and a
	// weak ETag; it goes out chunked. Brotli at quality 5, gzip at level 6.
	// Default true.
	Compress bool `yaml:"compress"`
	// CompressTypes are the media types Compress applies to, matched
	// case-insensitively without parameters; "type/*" matches a whole top
	// level type. Default: text/*, JavaScript, JSON, XML (and their +json,
	// +xml kinds listed), SVG, WebAssembly, TrueType/OpenType fonts and ICO;
	// already-compressed formats (images, video, woff2, archives) are left
	// out on purpose.
	CompressTypes []string `yaml:"compress_types"`
	// CompressMinSize: a response whose Content-Length is below this is not
	// compressed (the coding's framing would eat the gain). A response
	// without Content-Length is compressed. Default 256B.
	CompressMinSize Size `yaml:"compress_min_size"`
	// WarmKeys bounds the hot-key table a node keeps for warm restarts
	// (warm.go): the most used cacheable GET targets, counted on fills and
	// on a sample of hits. A draining node tells its peers, which prefetch
	// the keys they now own from it or another peer; a starting node asks
	// its peers for their hot keys it now owns and prefetches those from
	// them. Prefetches ask peers with "Cache-Control: only-if-cached" and
	// never send anyone to the origin. Default 10000; 0 turns warm restarts
	// off (cold restart).
	WarmKeys int `yaml:"warm_keys"`
	// WarmRate bounds prefetches, in objects per second. Default 1000: a
	// hand-over must finish within the drainer's server.drain_delay, and a
	// peer answers these from memory (bench/RESULTS.md "Warm restart").
	WarmRate float64 `yaml:"warm_rate"`
	// WarmMaxBytes bounds the bytes one warm-up prefetches. Default 256MiB.
	WarmMaxBytes Size `yaml:"warm_max_bytes"`
	// WarmTimeout bounds one warm-up (pulling the lists and prefetching);
	// while it runs, this node's own misses also ask a peer's cache before
	// the origin. The node is ready at once and warms in the background.
	// Default 30s.
	WarmTimeout Duration `yaml:"warm_timeout"`
	// WarmFile, when set, is where Shutdown writes the hot-key list (JSON
	// lines) and Start reads it back: for a node without a cluster, or a
	// whole cluster restarted at once. Its keys are prefetched from peers in
	// a cluster, from the origin (paced by warm_rate: lower it for a small
	// origin) without one. Default "" (none).
	WarmFile string `yaml:"warm_file"`
}

// ServerConfig holds public listener limits.
type ServerConfig struct {
	// ReadTimeout bounds reading one request (headers and body). Default 30s.
	ReadTimeout Duration `yaml:"read_timeout"`
	// WriteTimeout bounds writing one response; 0 (default) means none, so
	// large objects can stream to slow clients (IdleTimeout still applies).
	WriteTimeout Duration `yaml:"write_timeout"`
	// IdleTimeout closes idle keep-alive connections. Default 75s.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes caps request header size (431 past it). Default 16KiB.
	MaxHeaderBytes Size `yaml:"max_header_bytes"`
	// MaxRequestBody caps a request body. Bodies stream to the origin as
	// they arrive, never held whole in memory; one whose Content-Length is
	// larger is answered 413 before anything is forwarded, a chunked one
	// that grows past it is cut off (the origin request is aborted) and
	// answered 413. Default 64MiB. (It replaced max_body_bytes.)
	MaxRequestBody Size `yaml:"max_request_body"`
	// RateLimit limits requests per client IP; off by default.
	RateLimit RateLimitConfig `yaml:"rate_limit"`
	// MaxConnsPerIP caps the open connections of one client IP (all public
	// listeners together); a connection over the cap is closed as soon as
	// it is accepted, before a byte is read. 0 (default) means no cap.
	MaxConnsPerIP int `yaml:"max_conns_per_ip"`
	// Concurrency caps concurrent client connections (fasthttp serves one
	// request at a time per connection). Default 262144.
	Concurrency int `yaml:"concurrency"`
	// H2C serves cleartext HTTP/2 with prior knowledge (RFC 9113 §3.3) on
	// the plain listener beside HTTP/1.1, for a load balancer that speaks
	// HTTP/2 to its backends: a connection that opens with the HTTP/2
	// preface is HTTP/2. No Upgrade: h2c (RFC 9113 removed it). With TLS
	// on it needs tls.http: serve. Default false.
	H2C bool `yaml:"h2c"`
	// HealthPath, when set, answers readiness on the public listener at
	// this path (for geo-DNS health checkers). Default "" (off).
	HealthPath string `yaml:"health_path"`
	// DrainDelay: on shutdown, readiness turns 503 and the node keeps
	// serving this long before it stops accepting, so checkers (and DNS)
	// move traffic away first. Set it ≥ the checker's interval. Default 0.
	DrainDelay Duration `yaml:"drain_delay"`
	// TrustedProxies are the addresses (CIDRs like "10.0.0.0/8", or single
	// IPs) of proxies in front of this node whose forwarding fields are
	// believed: from them, X-Forwarded-For and Forwarded are extended and
	// X-Forwarded-Host and X-Forwarded-Proto kept. Any other client's copies
	// are dropped and replaced by the node's own values, so a client cannot
	// make a reflecting origin's cached answer depend on them. Default []
	// (trust no one).
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// RateLimitConfig is a token bucket per client IP (the TCP peer's address):
// Rate requests a second on average, Burst at once. A request finding the
// bucket empty is answered 429 with Retry-After. Readiness checks on
// server.health_path are never limited.
type RateLimitConfig struct {
	// Rate is the requests per second one client may sustain; 0 (default)
	// turns rate limiting off.
	Rate float64 `yaml:"rate"`
	// Burst is how many requests a client that has been idle may send at
	// once (the bucket's size). At least 1 when Rate is set. Default 100.
	Burst int `yaml:"burst"`
	// Exempt lists client addresses never limited, as CIDRs
	// ("10.0.0.0/8", "2001:db8::/32") or single IPs: load balancers,
	// monitoring. Default none.
	Exempt []string `yaml:"exempt"`
}

// AdminConfig is the operator listener.
type AdminConfig struct {
	// Listen address. Default "127.0.0.1:9090". "" disables it.
	Listen string `yaml:"listen"`
	// Token is a bearer token required on every admin request. It is
	// mandatory when Listen is not a loopback address.
	Token string `yaml:"token" redact:"true"`
}

// TLSConfig is the HTTPS listener and its certificates: certs.Config (the
// certificate keys, documented and validated there) plus the listener.
// Mode "" or "off" means plain HTTP only. See configs/tls.yaml for every
// key. http_port and tls_port 0 (default) mean the ports of the node's own
// plain and HTTPS listeners.
type TLSConfig struct {
	certs.Config `yaml:",inline"`
	// Listen is the HTTPS address, e.g. 0.0.0.0:443.
	Listen string `yaml:"listen"`
	// HTTP is what the plain listener does with non-challenge requests:
	// "redirect" (308 to https, default) or "serve".
	HTTP string `yaml:"http"`
	// HTTP2 offers h2 by ALPN on the HTTPS listener, before http/1.1.
	// Default true.
	HTTP2 bool `yaml:"http2"`
	// HTTP3 serves HTTP/3 over QUIC on UDP (http3_listen) and advertises
	// it with Alt-Svc on HTTPS responses. Default true.
	HTTP3 bool `yaml:"http3"`
	// HTTP3Listen is the UDP address of HTTP/3. Default "": the HTTPS
	// listener's address (same port number, over UDP).
	HTTP3Listen string `yaml:"http3_listen"`
}

// Enabled reports whether an HTTPS listener is configured.
func (t *TLSConfig) Enabled() bool { return t.Mode != "" && t.Mode != "off" }

// LogConfig selects the log output.
type LogConfig struct {
	// Level: debug, info (default), warn, error.
	Level string `yaml:"level"`
	// Format: text (default) or json.
	Format string `yaml:"format"`
	// Access is where the access log goes, one line per request on the
	// public listeners: "" (off, default), "stdout", "stderr" or a file
	// path (appended to; reopened on SIGHUP for log rotation).
	Access string `yaml:"access"`
	// AccessFormat: combined (nginx's, followed by the cache outcome, the
	// time in seconds and the Host; default) or json (one object a line).
	AccessFormat string `yaml:"access_format"`
}

// ConfigError is a configuration problem that names the key, and the file
// and line when the value came from a file.
type ConfigError struct {
	File string // "" when not from a file
	Line int    // 0 when unknown
	Key  string // dotted path, e.g. "cache.max_bytes"
	Msg  string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// DefaultConfig returns the built-in defaults: the packages' defaults for
// their blocks (packageDefaults), then the embedded default.yaml, which
// holds the edge's own and restates the packages' (a test keeps the two
// equal, so a package's setting has one default, in the package).
func DefaultConfig() Config {
	c := packageDefaults()
	if err := decodeStrict(&c, DefaultConfigYAML, "default.yaml"); err != nil {
		panic("edge: embedded default.yaml is invalid: " + err.Error())
	}
	return c
}

// packageDefaults is a Config holding only the defaults of the blocks that
// packages own.
func packageDefaults() Config {
	var c Config
	c.Origin.ClientConfig = origin.DefaultClientConfig()
	c.Origin.HealthCheck.HealthConfig = origin.DefaultHealthConfig()
	c.TLS.Config = certs.DefaultConfig()
	c.Cluster.Config = cluster.DefaultConfig()
	return c
}

// LoadConfig builds a configuration from the defaults, then the YAML file at
// path (when not ""), then EDGESHIELD_* variables from environ. Unknown keys,
// bad values and failed validation are *ConfigError values naming the key
// and line.
func LoadConfig(path string, environ []string) (Config, error) {
	c := DefaultConfig()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("read config: %w", err)
		}
		if err := decodeStrict(&c, data, path); err != nil {
			return c, err
		}
	}
	if err := applyEnv(&c, environ); err != nil {
		return c, err
	}
	if err := resolveAutoAddrs(&c, net.LookupIP); err != nil {
		return c, err
	}
	return c, nil
}

// ParseConfig decodes YAML over the defaults (for tests and embedding).
func ParseConfig(data []byte, name string) (Config, error) {
	c := DefaultConfig()
	err := decodeStrict(&c, data, name)
	return c, err
}

// decodeStrict walks the YAML tree against the struct so that every error
// names the dotted key and its line: yaml.v3's KnownFields reports the line
// but not the path, and custom unmarshalers' errors carry neither.
func decodeStrict(dst *Config, data []byte, file string) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return &ConfigError{File: file, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if len(root.Content) == 0 { // empty file: defaults stand
		return nil
	}
	return walk(reflect.ValueOf(dst).Elem(), root.Content[0], "", file)
}

func walk(v reflect.Value, n *yaml.Node, path, file string) error {
	if v.Kind() == reflect.Pointer && v.Type().Elem().Kind() == reflect.Struct {
		if n.Tag == "!!null" {
			v.SetZero()
			return nil
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return walk(v.Elem(), n, path, file)
	}
	if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct && n.Kind == yaml.SequenceNode {
		out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := walk(out.Index(i), item, fmt.Sprintf("%s[%d]", path, i), file); err != nil {
				return err
			}
		}
		v.Set(out)
		return nil
	}
	if n.Kind == yaml.MappingNode && v.Kind() == reflect.Struct && !implementsUnmarshaler(v) {
		fields := yamlFields(v.Type())
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			key := joinKey(path, k.Value)
			idx, ok := fields[k.Value]
			if !ok {
				if to := renamedKey(key); to != "" {
					return &ConfigError{File: file, Line: k.Line, Key: key, Msg: "renamed to " + to}
				}
				return &ConfigError{File: file, Line: k.Line, Key: key, Msg: "unknown key" + suggest(k.Value, fields)}
			}
			if err := walk(v.FieldByIndex(idx), val, key, file); err != nil {
				return err
			}
		}
		return nil
	}
	if v.Kind() == reflect.Struct && !implementsUnmarshaler(v) && n.Kind != yaml.MappingNode {
		return &ConfigError{File: file, Line: n.Line, Key: path, Msg: "want a mapping of keys"}
	}
	if v.Type() == durationType {
		return decodeDuration(v, n, path, file)
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		msg := err.Error()
		msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n  ")
		if i := strings.Index(msg, ": "); strings.HasPrefix(msg, "line ") && i > 0 {
			msg = msg[i+2:]
		}
		return &ConfigError{File: file, Line: n.Line, Key: path, Msg: msg}
	}
	return nil
}

var durationType = reflect.TypeFor[time.Duration]()

// decodeDuration reads a time.Duration field of a package's Config as
// Duration is read ("30s"; a bare number other than 0 is refused), sign
// included: whether a negative value means something is the package's
// Validate's call (tls.reload_interval: no polling), not the loader's.
func decodeDuration(v reflect.Value, n *yaml.Node, path, file string) error {
	d, err := parseDuration(n)
	if err != nil {
		return &ConfigError{File: file, Line: n.Line, Key: path, Msg: err.Error()}
	}
	v.SetInt(int64(d))
	return nil
}

func implementsUnmarshaler(v reflect.Value) bool {
	_, ok := v.Addr().Interface().(yaml.Unmarshaler)
	return ok
}

// yamlFields maps each yaml key of struct type t to its field's index
// path; the fields of a `yaml:",inline"` embedded struct (a package's
// Config inside the edge's block) count as t's own.
func yamlFields(t reflect.Type) map[string][]int {
	list := yamlFieldList(t)
	m := make(map[string][]int, len(list))
	for _, f := range list {
		m[f.name] = f.index
	}
	return m
}

// yamlField is one yaml key of a struct type: its field's index path, and
// whether its value is a secret (tag `redact:"true"`: GET /config hides it).
type yamlField struct {
	name   string
	index  []int
	redact bool
}

// yamlFieldList is yamlFields in declaration order (the documented order).
func yamlFieldList(t reflect.Type) []yamlField {
	var list []yamlField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if f.Anonymous && opts == "inline" {
			for _, sub := range yamlFieldList(f.Type) {
				sub.index = append([]int{i}, sub.index...)
				list = append(list, sub)
			}
			continue
		}
		if name != "" && name != "-" {
			list = append(list, yamlField{name: name, index: []int{i}, redact: f.Tag.Get("redact") == "true"})
		}
	}
	return list
}

func joinKey(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func suggest(k string, fields map[string][]int) string {
	names := make([]string, 0, len(fields))
	for f := range fields {
		names = append(names, f)
	}
	sort.Strings(names)
	best, bestD := "", 3 // suggest only close matches: typos, not guesses
	for _, f := range names {
		if d := editDistance(strings.ReplaceAll(k, "-", "_"), f); d < bestD {
			best, bestD = f, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return " (known keys: " + strings.Join(names, ", ") + ")"
}

// editDistance is the Levenshtein distance of two short keys.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// renamedKeys are keys that were renamed, old then new: using an old one is
// an error that names its successor, rather than a bare "unknown key" (or,
// worse, a silently ignored setting).
var renamedKeys = [...][2]string{
	{"server.max_body_bytes", "server.max_request_body"},
}

// renamedKey is the new name of a renamed key, or "".
func renamedKey(key string) string {
	for _, r := range renamedKeys {
		if r[0] == key {
			return r[1]
		}
	}
	return ""
}

// envName is the environment variable of a dotted key.
func envName(key string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// envPrefix is the prefix of configuration environment variables.
const envPrefix = "EDGESHIELD_"

// applyEnv sets keys from EDGESHIELD_* variables. EDGESHIELD_CONFIG names the
// file and is not a key; any other unknown EDGESHIELD_ variable is an error,
// so a typo does not silently leave a default in force.
func applyEnv(c *Config, environ []string) error {
	paths := map[string]reflect.Value{}
	for key, f := range configLeaves(c) {
		paths[envName(key)] = f
	}
	for _, kv := range environ {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, envPrefix) || name == envPrefix+"CONFIG" {
			continue
		}
		field, ok := paths[name]
		if !ok {
			for _, old := range renamedKeys {
				if name == envName(old[0]) {
					return &ConfigError{Key: name, Msg: "renamed to " + envName(old[1])}
				}
			}
			return &ConfigError{Key: name, Msg: "unknown environment variable"}
		}
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(val), &n); err != nil || len(n.Content) == 0 {
			n = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: val}
		} else {
			n = *n.Content[0]
		}
		if err := walk(field, &n, name, ""); err != nil {
			var ce *ConfigError
			if errors.As(err, &ce) {
				ce.Line = 0
			}
			return err
		}
	}
	return nil
}

// lineOf finds the line of a dotted key in a YAML document, for validation
// errors raised after decoding. A part may end in an index ("seeds[2]") to
// point at one item of a list. It returns 0 when the key is absent.
func lineOf(data []byte, key string) int {
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil || len(root.Content) == 0 {
		return 0
	}
	n := root.Content[0]
	parts := strings.Split(key, ".")
	for pi, part := range parts {
		idx := -1
		if b := strings.IndexByte(part, '['); b > 0 && strings.HasSuffix(part, "]") {
			i, err := strconv.Atoi(part[b+1 : len(part)-1])
			if err != nil {
				return 0
			}
			part, idx = part[:b], i
		}
		last := pi == len(parts)-1
		found := false
		for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == part {
				if last && idx < 0 && n.Content[i+1].Kind == yaml.ScalarNode {
					return n.Content[i].Line
				}
				n = n.Content[i+1]
				found = true
				break
			}
		}
		if !found {
			return 0
		}
		if idx >= 0 {
			if n.Kind != yaml.SequenceNode || idx >= len(n.Content) {
				return 0
			}
			n = n.Content[idx]
		}
	}
	return n.Line
}

// Validate checks values that decode fine but cannot work. src is the file's
// content (nil when none) so errors can carry the line of the offending key.
// The blocks that packages own are checked by the packages' Validate, whose
// *conf.FieldError names the key within the block.
func (c *Config) Validate(file string, src []byte) error {
	bad := func(key, format string, args ...any) error {
		e := &ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)}
		if src != nil {
			if l := lineOf(src, key); l > 0 {
				e.File, e.Line = file, l
			}
		}
		return e
	}
	for _, check := range []func(badFunc) error{c.validateOrigin, c.validateCache, c.validateServer, c.validateTLS, c.validateCluster, c.validateRest} {
		if err := check(bad); err != nil {
			return err
		}
	}
	return nil
}

// badFunc makes the ConfigError of a key, with its line when known.
type badFunc func(key, format string, args ...any) error

// within turns a package's Validate error into the ConfigError of the key
// under block.
func within(bad badFunc, block string, err error) error {
	var fe *conf.FieldError
	if errors.As(err, &fe) {
		return bad(block+"."+fe.Field, "%s", fe.Msg)
	}
	if err != nil {
		return bad(block, "%v", err)
	}
	return nil
}

func (c *Config) validateOrigin(bad badFunc) error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return bad("listen", "want host:port, got %q", c.Listen)
	}
	oc := c.Origin.ClientConfig
	switch oc.URL {
	case "":
		return bad("origin.url", "required (an http:// or https:// URL, or \"demo\")")
	case "demo": // the caller resolves it; check the rest
		oc.URL = "http://127.0.0.1"
	}
	if err := oc.Validate(); err != nil {
		return within(bad, "origin", err)
	}
	hc := c.Origin.HealthCheck
	if err := hc.HealthConfig.Validate(); err != nil {
		return within(bad, "origin.health_check", err)
	}
	if hc.Path != "" && (!strings.HasPrefix(hc.Path, "/") || strings.ContainsAny(hc.Path, " \t\r\n#")) {
		return bad("origin.health_check.path", "want \"\" (connect only) or an origin-form path like /healthz, got %q", hc.Path)
	}
	return nil
}

func (c *Config) validateCache(bad badFunc) error {
	if c.Cache.MaxBytes <= 0 {
		return bad("cache.max_bytes", "must be positive, got %s", c.Cache.MaxBytes)
	}
	if c.Cache.MaxObjectSize <= 0 || c.Cache.MaxObjectSize > c.Cache.MaxBytes {
		return bad("cache.max_object_size", "must be positive and at most cache.max_bytes (%s), got %s", c.Cache.MaxBytes, c.Cache.MaxObjectSize)
	}
	if c.Cache.OffheapMinSize < 0 {
		return bad("cache.offheap_min_size", "must be 0 (off) or a size, got %s", c.Cache.OffheapMinSize)
	}
	if i, err := cache.CheckEncodingPrefs(c.Cache.AcceptEncodings); err != nil {
		return bad(fmt.Sprintf("cache.accept_encodings[%d]", i), "%v", err)
	}
	for i, t := range c.Cache.CompressTypes {
		if err := checkMediaRange(t); err != nil {
			return bad(fmt.Sprintf("cache.compress_types[%d]", i), "%v", err)
		}
	}
	if c.Cache.CompressMinSize < 0 {
		return bad("cache.compress_min_size", "must be 0 or a size, got %s", c.Cache.CompressMinSize)
	}
	if err := c.validateWarm(bad); err != nil {
		return err
	}
	if c.Cache.HeuristicFraction < 0 || c.Cache.HeuristicFraction > 1 {
		return bad("cache.heuristic_fraction", "must be between 0 and 1, got %v", c.Cache.HeuristicFraction)
	}
	return nil
}

func (c *Config) validateServer(bad badFunc) error {
	if c.Server.MaxHeaderBytes < 1024 {
		return bad("server.max_header_bytes", "must be at least 1KiB, got %s", c.Server.MaxHeaderBytes)
	}
	if c.Server.MaxRequestBody <= 0 || c.Server.MaxRequestBody > math.MaxInt32 {
		// fasthttp takes the limit as an int; 2GiB keeps it portable.
		return bad("server.max_request_body", "must be positive and below 2GiB, got %s", c.Server.MaxRequestBody)
	}
	if rl := c.Server.RateLimit; rl.Rate < 0 || math.IsNaN(rl.Rate) || math.IsInf(rl.Rate, 0) {
		return bad("server.rate_limit.rate", "must be 0 (off) or a positive number of requests per second, got %v", rl.Rate)
	} else if rl.Rate > 0 && rl.Burst < 1 {
		return bad("server.rate_limit.burst", "must be at least 1 when server.rate_limit.rate is set, got %d", rl.Burst)
	}
	for i, e := range c.Server.RateLimit.Exempt {
		if _, err := parsePrefix(e); err != nil {
			return bad(fmt.Sprintf("server.rate_limit.exempt[%d]", i), "want a CIDR like 10.0.0.0/8 or an IP address, got %q", e)
		}
	}
	if c.Server.MaxConnsPerIP < 0 {
		return bad("server.max_conns_per_ip", "must be 0 (off) or positive, got %d", c.Server.MaxConnsPerIP)
	}
	for i, p := range c.Server.TrustedProxies {
		if _, err := parseTrustedProxy(p); err != nil {
			return bad(fmt.Sprintf("server.trusted_proxies[%d]", i), "%v", err)
		}
	}
	return nil
}

func (c *Config) validateTLS(bad badFunc) error {
	if !c.TLS.Enabled() {
		return nil
	}
	if _, _, err := net.SplitHostPort(c.TLS.Listen); err != nil {
		return bad("tls.listen", "want host:port, got %q", c.TLS.Listen)
	}
	switch c.TLS.HTTP {
	case "redirect", "serve":
	default:
		return bad("tls.http", "want redirect or serve, got %q", c.TLS.HTTP)
	}
	if c.Server.H2C && c.TLS.HTTP != "serve" {
		return bad("server.h2c", "the plain listener only redirects to HTTPS (tls.http: %s): set tls.http: serve to serve HTTP/2 on it", c.TLS.HTTP)
	}
	if c.TLS.HTTP3 && c.TLS.HTTP3Listen != "" {
		if _, _, err := net.SplitHostPort(c.TLS.HTTP3Listen); err != nil {
			return bad("tls.http3_listen", "want host:port (UDP), got %q", c.TLS.HTTP3Listen)
		}
	}
	return within(bad, "tls", c.TLS.Config.Validate())
}

// validateCluster checks the edge's keys, then cluster.Config's rules with
// the peer address counted among the addresses that must all be loopback
// for gossip to run without a secret key (shield hops are signed with it).
func (c *Config) validateCluster(bad badFunc) error {
	cc := c.Cluster
	if !cc.Enabled {
		return nil
	}
	if _, _, err := net.SplitHostPort(cc.PeerListen); err != nil {
		return bad("cluster.peer_listen", "want host:port, got %q", cc.PeerListen)
	}
	if cc.PeerAdvertise != "" {
		if _, _, err := net.SplitHostPort(cc.PeerAdvertise); err != nil {
			return bad("cluster.peer_advertise", "want host:port, got %q", cc.PeerAdvertise)
		}
	}
	gc := cc.Config
	gc.PeerAddr = cmp.Or(cc.PeerAdvertise, cc.PeerListen)
	return within(bad, "cluster", gc.Validate())
}

func (c *Config) validateRest(bad badFunc) error {
	if c.Admin.Listen != "" {
		host, _, err := net.SplitHostPort(c.Admin.Listen)
		if err != nil {
			return bad("admin.listen", "want host:port, got %q", c.Admin.Listen)
		}
		if !isLoopbackHost(host) && c.Admin.Token == "" {
			return bad("admin.token", "required when admin.listen (%s) is not a loopback address", c.Admin.Listen)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return bad("log.level", "want debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return bad("log.format", "want text or json, got %q", c.Log.Format)
	}
	switch c.Log.AccessFormat {
	case "combined", "json":
	default:
		return bad("log.access_format", "want combined or json, got %q", c.Log.AccessFormat)
	}
	return nil
}

// parseTrustedProxy parses a server.trusted_proxies item: a CIDR or a
// single IP (a /32 or /128). IPv4-mapped IPv6 forms are unmapped, as client
// addresses are before they are compared.
func parseTrustedProxy(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("want a CIDR like 10.0.0.0/8 or an IP, got %q", s)
	}
	if p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkMediaRange accepts "type/subtype" or "type/*" (RFC 9110 §8.3.1
// tokens, no parameters) for cache.compress_types. "*/*" is refused: it
// would code images, video and archives, which only grow.
func checkMediaRange(t string) error {
	typ, sub, ok := strings.Cut(t, "/")
	if !ok || !isToken(typ) || !(isToken(sub) || sub == "*") {
		return fmt.Errorf("want a media type like text/css or text/*, got %q", t)
	}
	if typ == "*" {
		return fmt.Errorf("%q would compress every type, already-compressed ones too; list the types", t)
	}
	return nil
}

// isToken reports whether s is a non-empty RFC 9110 §5.6.2 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}
