package origin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeshield/edgeshield/internal/conf"
	"github.com/valyala/fasthttp"
)

// Field is one header line. Names keep the case fasthttp gives them
// (canonical form, e.g. "Content-Type"); compare them case-insensitively.
type Field struct{ Name, Value string }

// ClientConfig configures a Client. Zero values select the documented
// defaults; NewClient fills them in and validates the rest. The yaml keys
// are the edge's origin block (configs/edge.yaml); fields tagged "-" are
// not configurable there. Durations are time.Duration so that Go callers
// write 5*time.Second; the edge's loader reads "5s" into them.
type ClientConfig struct {
	// URL is the upstream: "http://host[:port]" or "https://host[:port]".
	// Scheme and host only: a path (other than "/"), query, fragment or
	// user info is an error.
	URL string `yaml:"url"`
	// ConnectTimeout bounds the TCP connect plus, for https, the TLS
	// handshake. Zero means 5s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// HeaderTimeout is the longest wait from the moment the request has been
	// written until the response headers have been read. Exceeding it yields
	// ErrTimeout. Zero means 30s.
	HeaderTimeout time.Duration `yaml:"header_timeout"`
	// IdleReadTimeout is the longest gap between two successful reads of the
	// connection while the body streams: a stalled upstream makes Body.Read
	// fail with ErrTimeout instead of hanging. Zero means 30s.
	IdleReadTimeout time.Duration `yaml:"idle_read_timeout"`
	// WriteTimeout bounds writing the request (headers and body).
	// Zero means 30s.
	WriteTimeout time.Duration `yaml:"-"`
	// MaxConns caps the connections to the upstream, idle and busy.
	// Zero means 512.
	MaxConns int `yaml:"max_conns"`
	// MaxConnWait is how long Do waits for a connection when MaxConns are
	// busy before failing with ErrBusy. Zero means 1s.
	MaxConnWait time.Duration `yaml:"max_conn_wait"`
	// MaxIdleConnDuration closes keep-alive connections idle for longer.
	// Zero means 90s.
	MaxIdleConnDuration time.Duration `yaml:"-"`
	// MaxHeaderBytes caps the size of the response headers (it is the
	// per-connection read buffer size); larger headers yield ErrBadResponse.
	// Zero means 16 KiB.
	MaxHeaderBytes int `yaml:"-"`
	// TLS is used for https upstreams (RootCAs, client certificates, …).
	// It is cloned. ServerName defaults to the URL host and is used for SNI
	// and certificate verification. NextProtos is forced to http/1.1 only:
	// fasthttp does not speak h2. Nil means system roots.
	TLS *tls.Config `yaml:"-"`
	// Name is sent as User-Agent when the forwarded request has none, and
	// names the client in errors. Empty means no User-Agent is added.
	Name string `yaml:"-"`
}

// Defaults applied by NewClient to zero ClientConfig fields.
const (
	DefaultConnectTimeout      = 5 * time.Second
	DefaultHeaderTimeout       = 30 * time.Second
	DefaultIdleReadTimeout     = 30 * time.Second
	DefaultWriteTimeout        = 30 * time.Second
	DefaultMaxConns            = 512
	DefaultMaxConnWait         = time.Second
	DefaultMaxIdleConnDuration = 90 * time.Second
	DefaultMaxHeaderBytes      = 16 << 10
)

// Request is what Do sends. The edge has already removed hop-by-hop headers
// (RFC 9110 §7.6.1); Do also ignores Host, Content-Length,
// Transfer-Encoding and Connection in Header because it sets them itself.
type Request struct {
	Method     string
	RequestURI string  // origin-form path?query, e.g. "/a/b?x=1", sent byte for byte
	Host       string  // Host header; "" means the upstream URL's host
	Header     []Field // end-to-end headers to send
	Body       []byte  // sent with Content-Length; not retained after Do returns

	// BodyStream, when not nil, is the body instead of Body (which must
	// then be empty): Do reads it while it writes the request, through one
	// pooled 32 KiB buffer, so an upload of any size holds that much memory
	// and no more. A request with a BodyStream is never retried (the
	// stream cannot be replayed). An error from Read aborts the request
	// (the connection is closed, so the origin sees a truncated body) and
	// Do returns an error wrapping ErrRequestBody and that error.
	BodyStream io.Reader
	// ContentLength is the length of BodyStream: exactly that many bytes
	// are read and sent with Content-Length (fewer is an ErrRequestBody
	// error); -1 sends the body chunked (RFC 9112 §7.1), read until io.EOF.
	// Ignored without BodyStream.
	ContentLength int64
}

// Response is what Do returns once the response headers are in.
type Response struct {
	Status int
	// Header holds every response header as received, one Field per line
	// (several Set-Cookie lines stay separate), including Content-Length
	// and Connection when present. Transfer-Encoding is consumed by the
	// client (the body is already de-chunked). Order: fasthttp parses
	// Content-Length, Content-Type, Content-Encoding, Server and Set-Cookie
	// into dedicated slots, so they come first; the rest keep their order.
	Header []Field
	// ContentLength is the length of Body: -1 when unknown (chunked or
	// close-delimited), 0 for HEAD, 204 and 304 responses.
	ContentLength int64
	// Body streams from the connection. It is never nil. The caller must
	// Close it: a fully read body returns the connection to the pool, an
	// unfinished one closes the connection. Read is not safe for concurrent
	// use; Close may be called from another goroutine and interrupts a
	// blocked Read.
	Body io.ReadCloser
}

// Client is a pooled HTTP/1.1 client for one upstream. It is safe for
// concurrent use.
type Client struct {
	cfg  ClientConfig // defaults filled in
	host string       // default Host header
	addr string       // dial address, host:port
	tls  *tls.Config  // nil for http
	// dialContext opens the TCP connection; net.Dialer.DialContext except
	// in tests that substitute in-memory connections.
	dialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	hc          *fasthttp.HostClient

	calls  sync.Map // *fasthttp.Request → *call, so the transport finds the per-request state
	pool   sync.Pool
	bufs   sync.Pool // *[]byte of streamBufSize: copy buffers of streamed request bodies
	closed atomic.Bool
	// slots admits at most MaxConns exchanges at once (a token from Do to
	// putCall), so fasthttp always finds an idle connection or room to
	// dial one and never has to queue: its queue can miss a connection
	// released between its pool check and the waiter's registration, and
	// the request then waits out MaxConnWaitTimeout although a connection
	// is idle (valyala/fasthttp#2391, open in v1.74.0).
	slots chan struct{}

	// Idle-connection expiry (see janitor): busy counts exchanges in
	// progress, lastDone is when the last one ended (UnixNano).
	busy     atomic.Int64
	lastDone atomic.Int64
	stop     chan struct{} // closed by Close
	wg       sync.WaitGroup
}

// NewClient validates cfg, fills in defaults and returns a Client. It does
// not connect: connections are dialled on demand.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("origin: %w", err)
	}
	u, _ := url.Parse(cfg.URL) // Validate parsed it
	if err := fillDefaults(&cfg); err != nil {
		return nil, err
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	c := &Client{
		cfg:  cfg,
		host: u.Host,
		addr: net.JoinHostPort(u.Hostname(), port),
	}
	dialer := &net.Dialer{KeepAlive: 30 * time.Second}
	c.dialContext = dialer.DialContext
	if u.Scheme == "https" {
		c.tls = tlsConfig(cfg.TLS, u.Hostname())
	}
	c.pool.New = func() any { return new(call) }
	c.bufs.New = func() any { b := make([]byte, streamBufSize); return &b }
	c.slots = make(chan struct{}, cfg.MaxConns)
	c.stop = make(chan struct{})
	c.lastDone.Store(time.Now().UnixNano())
	c.hc = &fasthttp.HostClient{
		Addr: c.addr,
		Name: cfg.Name,
		// Our dial does TCP and TLS itself so that ConnectTimeout covers the
		// handshake and every connection is wrapped in a *conn. fasthttp
		// therefore sees a plain-HTTP host client (IsTLS false).
		DialTimeout:              c.dial,
		Transport:                transport{c},
		NoDefaultUserAgentHeader: true,
		// At most one retry: two attempts in total. Whether the second one
		// happens is decided by transport (failure on a reused connection
		// before any response byte) and retryIfErr (method and error kind).
		MaxIdemponentCallAttempts: 2,
		RetryIfErr:                retryIfErr,
		// The same cap as slots; fasthttp's own wait stays as a backstop for
		// a connection still being torn down when its slot is reused.
		MaxConns:            cfg.MaxConns,
		MaxConnWaitTimeout:  cfg.MaxConnWait,
		MaxIdleConnDuration: cfg.MaxIdleConnDuration,
		ReadBufferSize:      cfg.MaxHeaderBytes,
		// The body is never buffered whole by the client: see transport.
		StreamResponseBody: true,
		// LIFO keeps the most recently used connections busy, so that idle
		// ones age out instead of being picked just as the upstream closes
		// them (which is the race the single retry exists for).
		ConnPoolStrategy: fasthttp.LIFO,
	}
	c.wg.Add(1)
	go c.janitor()
	return c, nil
}

// janitor closes the pool's idle connections once the client has been idle
// for MaxIdleConnDuration. It replaces fasthttp's own cleaner, which sleeps
// uninterruptibly and would outlive Close by up to MaxIdleConnDuration; the
// transport never lets that one start. Connections that sit idle at the
// bottom of a pool that stays in use are caught when next taken (see
// transport.RoundTrip).
func (c *Client) janitor() {
	defer c.wg.Done()
	// Checking twice per period bounds how long past the limit an idle
	// connection can live.
	tick := time.NewTicker(max(c.cfg.MaxIdleConnDuration/2, time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case now := <-tick.C:
			if c.busy.Load() == 0 && now.UnixNano()-c.lastDone.Load() >= int64(c.cfg.MaxIdleConnDuration) {
				c.hc.CloseIdleConnections()
			}
		}
	}
}

func fillDefaults(cfg *ClientConfig) error {
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"ConnectTimeout", &cfg.ConnectTimeout, DefaultConnectTimeout},
		{"HeaderTimeout", &cfg.HeaderTimeout, DefaultHeaderTimeout},
		{"IdleReadTimeout", &cfg.IdleReadTimeout, DefaultIdleReadTimeout},
		{"WriteTimeout", &cfg.WriteTimeout, DefaultWriteTimeout},
		{"MaxConnWait", &cfg.MaxConnWait, DefaultMaxConnWait},
		{"MaxIdleConnDuration", &cfg.MaxIdleConnDuration, DefaultMaxIdleConnDuration},
	}
	for _, d := range durations {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxHeaderBytes == 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	return nil
}

// DefaultClientConfig is the configuration NewClient gives the zero
// fields, for callers (the edge's defaults) that show the values in use.
func DefaultClientConfig() ClientConfig {
	c := ClientConfig{}
	_ = fillDefaults(&c)
	return c
}

// Validate checks cfg without filling defaults. Errors are
// *conf.FieldError values naming the yaml key (the Go field for the fields
// not in YAML).
func (cfg *ClientConfig) Validate() error {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return conf.Errorf("url", "want http://host[:port] or https://host[:port], got %q", cfg.URL)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil || u.Opaque != "" {
		return conf.Errorf("url", "must not have a path, query, fragment or user info, got %q", cfg.URL)
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"connect_timeout", cfg.ConnectTimeout}, {"header_timeout", cfg.HeaderTimeout},
		{"idle_read_timeout", cfg.IdleReadTimeout}, {"WriteTimeout", cfg.WriteTimeout},
		{"max_conn_wait", cfg.MaxConnWait}, {"MaxIdleConnDuration", cfg.MaxIdleConnDuration},
	} {
		if d.v < 0 {
			return conf.Errorf(d.field, "must not be negative, got %v", d.v)
		}
	}
	if cfg.MaxConns < 0 {
		return conf.Errorf("max_conns", "must be 0 (default %d) or positive, got %d", DefaultMaxConns, cfg.MaxConns)
	}
	if cfg.MaxHeaderBytes != 0 && cfg.MaxHeaderBytes < 1024 {
		// Below this even an ordinary status line plus Date won't fit.
		return conf.Errorf("MaxHeaderBytes", "must be 0 (default) or at least 1024, got %d", cfg.MaxHeaderBytes)
	}
	return nil
}

func tlsConfig(base *tls.Config, host string) *tls.Config {
	var t *tls.Config
	if base != nil {
		t = base.Clone()
	} else {
		t = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if t.ServerName == "" {
		t.ServerName = host
	}
	// fasthttp speaks HTTP/1.1 only: never offer h2 in ALPN.
	t.NextProtos = []string{"http/1.1"}
	if t.ClientSessionCache == nil {
		// Resumed sessions make reconnecting to the origin (after idle
		// expiry or a reset) cost one round trip less.
		t.ClientSessionCache = tls.NewLRUClientSessionCache(0)
	}
	return t
}

// Do sends req and returns once the response headers have arrived; the body
// streams through Response.Body, which the caller must Close.
//
// ctx bounds the wait for a connection and for the headers: when it is done,
// Do returns promptly and the connection is discarded. A context deadline is
// reported as ErrTimeout (wrapping context.DeadlineExceeded as well); a
// cancellation is reported as context.Canceled wrapped, with no origin
// sentinel, because the origin did nothing wrong. ctx does not bound the
// body: close the Body to abandon it.
//
// Every other error wraps exactly one of ErrTimeout, ErrRefused, ErrReset,
// ErrBusy, ErrBadResponse, or ErrInvalidRequest for a malformed req.
func (c *Client) Do(ctx context.Context, req *Request) (*Response, error) {
	if c.closed.Load() {
		return nil, fmt.Errorf("%w: client for %s is closed", ErrRefused, c.addr)
	}
	if err := validate(req); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, ctxError(err)
	}
	if err := c.acquireSlot(ctx); err != nil {
		return nil, err
	}
	c.busy.Add(1) // until putCall
	cl := c.pool.Get().(*call)
	cl.ctx = ctx
	c.fill(cl, req)
	c.calls.Store(&cl.req, cl)
	err := c.hc.Do(&cl.req, &cl.resp)
	c.calls.Delete(&cl.req)
	cl.ctx = nil
	if err != nil {
		c.putCall(cl)
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxError(ctxErr)
		}
		return nil, classify(fmt.Errorf("%s %s: %w", req.Method, c.addr, err))
	}
	return c.response(cl), nil
}

// acquireSlot waits up to MaxConnWait for one of the MaxConns exchange
// slots; putCall gives it back.
func (c *Client) acquireSlot(ctx context.Context) error {
	select {
	case c.slots <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(c.cfg.MaxConnWait)
	defer t.Stop()
	select {
	case c.slots <- struct{}{}:
		return nil
	case <-t.C:
		return fmt.Errorf("%w: %s: all %d connections busy for %s", ErrBusy, c.addr, c.cfg.MaxConns, c.cfg.MaxConnWait)
	case <-ctx.Done():
		return ctxError(ctx.Err())
	}
}

func ctxError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return fmt.Errorf("origin request abandoned: %w", err)
}

// fill copies req into the fasthttp request. The request goes out as given:
// the request line is never re-parsed (no path normalization, which would
// change what the origin sees and caches), and with fasthttp's special
// header handling disabled, fields keep their order and values — fasthttp
// would otherwise re-serialize Cookie (dropping quotes, re-spacing) and
// move fields around. The fields the client owns are added explicitly.
func (c *Client) fill(cl *call, req *Request) {
	h := &cl.req.Header
	h.DisableSpecialHeader()
	h.SetMethod(req.Method)
	h.SetRequestURI(req.RequestURI)
	host := req.Host
	if host == "" {
		host = c.host
	}
	h.Add("Host", host)
	hasUA := false
	for _, f := range req.Header {
		if skipRequestHeader(f.Name) {
			continue
		}
		hasUA = hasUA || strings.EqualFold(f.Name, "User-Agent")
		h.Add(f.Name, f.Value)
	}
	if !hasUA && c.cfg.Name != "" {
		h.Add("User-Agent", c.cfg.Name)
	}
	if req.BodyStream != nil {
		cl.body, cl.bodyLen = req.BodyStream, req.ContentLength
		if req.ContentLength < 0 {
			h.Add("Transfer-Encoding", "chunked")
			return
		}
		cl.num = strconv.AppendInt(cl.num[:0], req.ContentLength, 10)
		h.AddBytesV("Content-Length", cl.num)
		return
	}
	// RFC 9110 §8.6: send Content-Length for a body, and 0 for methods that
	// normally carry one (POST, PUT) even when it is empty.
	if len(req.Body) > 0 || (!h.IsGet() && !h.IsHead()) {
		cl.num = strconv.AppendInt(cl.num[:0], int64(len(req.Body)), 10)
		h.AddBytesV("Content-Length", cl.num)
	}
	cl.req.SetBodyRaw(req.Body)
}

// skipRequestHeader reports the fields Do manages itself: Host comes from
// Request.Host, framing from Request.Body, and connection management from
// the pool.
func skipRequestHeader(name string) bool {
	for _, s := range [...]string{"Host", "Content-Length", "Transfer-Encoding", "Connection"} {
		if strings.EqualFold(name, s) {
			return true
		}
	}
	return false
}

// response copies the fasthttp response into a Response. Header strings are
// carved out of one allocation.
func (c *Client) response(cl *call) *Response {
	rh := &cl.resp.Header
	size, n := 0, 0
	for k, v := range rh.All() {
		size += len(k) + len(v)
		n++
	}
	var sb strings.Builder
	sb.Grow(size)
	for k, v := range rh.All() {
		sb.Write(k)
		sb.Write(v)
	}
	all := sb.String()
	fields := make([]Field, 0, n)
	off := 0
	for k, v := range rh.All() {
		name := all[off : off+len(k)]
		off += len(k)
		fields = append(fields, Field{Name: name, Value: all[off : off+len(v)]})
		off += len(v)
	}
	r := &Response{Status: rh.StatusCode(), Header: fields}
	if cl.stream == nil {
		// No body (HEAD, 204, 304, 1xx): the transport already gave the
		// connection back.
		r.Body = noBody{}
		c.putCall(cl)
		return r
	}
	r.ContentLength = int64(rh.ContentLength())
	if r.ContentLength < 0 {
		r.ContentLength = -1
	}
	r.Body = &body{c: c, cl: cl}
	return r
}

// Close stops the client's background goroutine (and waits for it), closes
// idle connections and makes later Do calls fail with ErrRefused. Bodies
// still open keep their connection until they are closed; the connection is
// then closed instead of pooled. Close is idempotent.
func (c *Client) Close() {
	if c.closed.Swap(true) {
		return
	}
	close(c.stop)
	c.wg.Wait()
	c.hc.CloseIdleConnections()
}

// Addr returns the dial address (host:port) of the upstream.
func (c *Client) Addr() string { return c.addr }

// Conns returns the number of open connections, idle and busy (for stats).
func (c *Client) Conns() int { return c.hc.ConnsCount() }

func (c *Client) putCall(cl *call) {
	cl.req.Reset()
	cl.resp.Reset() // also hands fasthttp's body stream back to its pool
	cl.ctx, cl.conn, cl.done, cl.br, cl.stream, cl.closeConn = nil, nil, nil, nil, nil, false
	cl.body, cl.bodyLen = nil, 0
	c.pool.Put(cl)
	c.lastDone.Store(time.Now().UnixNano())
	c.busy.Add(-1)
	<-c.slots
}

// retryIfErr is the policy half of the single retry (the transport decides
// whether the failure happened on a reused connection before any response
// byte): only GET and HEAD, whose replay is harmless (RFC 9110 §9.2.2 —
// PUT/DELETE are idempotent too, but an edge has no business replaying
// writes), and never after a timeout, which would only double the wait.
func retryIfErr(req *fasthttp.Request, attempts int, err error) (resetTimeout, retry bool) {
	if attempts > 1 || isTimeout(err) {
		return false, false
	}
	return false, req.Header.IsGet() || req.Header.IsHead()
}

// validate rejects requests that would corrupt the request line or header
// block (request smuggling / header injection) before anything is sent.
func validate(req *Request) error {
	if req == nil {
		return fmt.Errorf("%w: nil request", ErrInvalidRequest)
	}
	if req.Method == "" || !isToken(req.Method) {
		return fmt.Errorf("%w: method %q", ErrInvalidRequest, req.Method)
	}
	if req.RequestURI != "*" && !strings.HasPrefix(req.RequestURI, "/") || hasCTLOrSpace(req.RequestURI) {
		return fmt.Errorf("%w: request uri %q is not origin-form", ErrInvalidRequest, req.RequestURI)
	}
	if req.BodyStream != nil && (len(req.Body) > 0 || req.ContentLength < -1) {
		return fmt.Errorf("%w: BodyStream with a Body or a ContentLength below -1 (%d)", ErrInvalidRequest, req.ContentLength)
	}
	if hasCTLOrSpace(req.Host) {
		return fmt.Errorf("%w: host %q", ErrInvalidRequest, req.Host)
	}
	for _, f := range req.Header {
		if !isToken(f.Name) {
			return fmt.Errorf("%w: header name %q", ErrInvalidRequest, f.Name)
		}
		if strings.ContainsAny(f.Value, "\r\n\x00") {
			return fmt.Errorf("%w: header %s has a control character in its value", ErrInvalidRequest, f.Name)
		}
	}
	return nil
}

// isToken reports whether s is an RFC 9110 §5.6.2 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0:
		default:
			return false
		}
	}
	return true
}

func hasCTLOrSpace(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}

type noBody struct{}

func (noBody) Read([]byte) (int, error) { return 0, io.EOF }
func (noBody) Close() error             { return nil }
