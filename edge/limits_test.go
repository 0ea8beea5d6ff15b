package edge

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRateLimit: a client gets its burst, then 429 with Retry-After; the
// bucket refills with the (injected) clock, never past the burst; exempt
// addresses and readiness checks are never limited.
func TestRateLimit(t *testing.T) {
	clock := newTestClock()
	o := newTestOrigin(t, clock, static("ok", "Cache-Control: max-age=3600"))
	n := newTestNode(t, o.srv.URL, clock, func(c *Config) {
		c.Server.RateLimit = RateLimitConfig{Rate: 2, Burst: 3}
		c.Server.HealthPath = "/ready"
	})
	url := "http://" + n.Addr() + "/a"
	expect := func(t *testing.T, what string, want ...int) {
		t.Helper()
		for i, w := range want {
			r, _ := get(t, url)
			if r.StatusCode != w {
				t.Fatalf("%s: request %d: got %d, want %d", what, i+1, r.StatusCode, w)
			}
			if w == http.StatusTooManyRequests {
				// Half a token short at 2/s: 0.5 s, rounded up.
				if ra := r.Header.Get("Retry-After"); ra != "1" {
					t.Errorf("%s: Retry-After: got %q, want \"1\"", what, ra)
				}
			}
		}
	}
	expect(t, "burst", 200, 200, 200, 429, 429)
	if r, _ := get(t, "http://"+n.Addr()+"/ready"); r.StatusCode != 200 {
		t.Errorf("readiness while limited: got %d, want 200", r.StatusCode)
	}
	clock.advance(500 * time.Millisecond) // one token at 2/s
	expect(t, "after 0.5s", 200, 429)
	clock.advance(time.Hour) // refills to the burst, not beyond
	expect(t, "after an hour", 200, 200, 200, 429)
	if got, want := n.Stats().RateLimited, uint64(4); got != want {
		t.Errorf("Stats.RateLimited: got %d, want %d", got, want)
	}
	if !strings.Contains(string(n.api.metrics.appendTo(nil)), "edgeshield_rate_limited_total 4\n") {
		t.Errorf("metrics lack edgeshield_rate_limited_total 4")
	}

	for _, tt := range []struct {
		exempt  []string
		limited bool
	}{
		{[]string{"127.0.0.0/8"}, false},
		{[]string{"10.0.0.0/8", "127.0.0.1"}, false},
		{[]string{"::1", "10.0.0.0/8"}, true}, // not our 127.0.0.1
	} {
		t.Run(fmt.Sprint("exempt ", tt.exempt), func(t *testing.T) {
			n := newTestNode(t, o.srv.URL, clock, func(c *Config) {
				c.Server.RateLimit = RateLimitConfig{Rate: 1, Burst: 1, Exempt: tt.exempt}
			})
			limited := 0
			for range 5 {
				if r, _ := get(t, "http://"+n.Addr()+"/a"); r.StatusCode == http.StatusTooManyRequests {
					limited++
				}
			}
			if got, want := limited > 0, tt.limited; got != want {
				t.Errorf("limited: got %d of 5, want limited %v", limited, want)
			}
		})
	}
}

// TestRateLimiterBounded: many client addresses do not grow the limiter
// past maxRateClients, and buckets that have refilled are swept away.
func TestRateLimiterBounded(t *testing.T) {
	l := newRateLimiter(RateLimitConfig{Rate: 10, Burst: 5})
	now := time.Now().UnixNano()
	const clients = 3 * maxRateClients
	for i := range clients {
		ip := net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)).To4()
		if i%2 == 1 {
			ip = net.ParseIP(fmt.Sprintf("2001:db8::%x:%x", i>>16, i&0xffff))
		}
		k, _ := keyOfIP(ip)
		if ok, _ := l.allow(k, now); !ok {
			t.Fatalf("client %d refused on its first request", i)
		}
	}
	if got := l.clients(); got > maxRateClients || got < maxRateClients/2 {
		t.Errorf("buckets after %d clients: got %d, want at most %d (and most of them)", clients, got, maxRateClients)
	}
	if got := l.sweep(now); got != 0 {
		t.Errorf("sweep right away dropped %d buckets, want 0 (none has refilled)", got)
	}
	l.sweep(now + int64(time.Second)) // 10/s refills one token in 0.1 s
	if got := l.clients(); got != 0 {
		t.Errorf("buckets after they refilled and a sweep: got %d, want 0", got)
	}
}

// TestRateLimiterKeys: IPv4 peers (4-byte or 16-byte form) share one
// bucket; other addresses have their own.
func TestRateLimiterKeys(t *testing.T) {
	l := newRateLimiter(RateLimitConfig{Rate: 1, Burst: 1})
	now := time.Now().UnixNano()
	k4, _ := keyOfIP(net.IP{192, 0, 2, 1})
	k16, _ := keyOfIP(net.ParseIP("192.0.2.1"))
	kOther, _ := keyOfIP(net.ParseIP("192.0.2.2"))
	if ok, _ := l.allow(k4, now); !ok {
		t.Fatal("first request refused")
	}
	if ok, wait := l.allow(k16, now); ok || wait != time.Second {
		t.Errorf("same address in 16-byte form: got allowed %v wait %s, want refused, 1s", ok, wait)
	}
	if ok, _ := l.allow(kOther, now); !ok {
		t.Errorf("another address: refused, want allowed")
	}
}

// TestMaxConnsPerIP: the (N+1)th concurrent connection from one address is
// closed at accept without an answer; closing one of the N frees a slot.
func TestMaxConnsPerIP(t *testing.T) {
	o := newTestOrigin(t, nil, static("ok", "Cache-Control: max-age=3600"))
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) { c.Server.MaxConnsPerIP = 2 })
	served := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || string(b) != "ok" {
			return fmt.Errorf("answer %d %q (%v), want 200 ok", resp.StatusCode, b, err)
		}
		return nil
	}
	dial := func() net.Conn {
		c, err := net.Dial("tcp", n.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	first, second := dial(), dial()
	for i, c := range []net.Conn{first, second} {
		if err := served(c); err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
	}
	err := served(dial())
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("third connection: got %v, want it closed (EOF or reset)", err)
	}
	if got := n.Stats().ConnsRefused; got != 1 {
		t.Errorf("Stats.ConnsRefused: got %d, want 1", got)
	}
	first.Close()
	// The slot frees when the server has seen the close; until then a new
	// connection is refused like the third.
	waitFor(t, "the closed connection's slot", 10*time.Second, func() bool { return openConns(n.conns, "127.0.0.1") == 1 })
	if err := served(dial()); err != nil {
		t.Fatalf("connection after one closed: %v", err)
	}
	if err := served(second); err != nil {
		t.Errorf("second connection after all that: %v", err)
	}
}

// TestRenamedBodyLimitVariable: the environment variable of the renamed
// key is an error naming its successor (the key itself is a row of
// TestConfigFileErrorsNameKeyAndLine).
func TestRenamedBodyLimitVariable(t *testing.T) {
	_, err := LoadConfig("", []string{"EDGESHIELD_SERVER_MAX_BODY_BYTES=1MiB"})
	if err == nil || !strings.Contains(err.Error(), "EDGESHIELD_SERVER_MAX_BODY_BYTES: renamed to EDGESHIELD_SERVER_MAX_REQUEST_BODY") {
		t.Errorf("got %v, want it to name the variable and its new name", err)
	}
}

// openConns is the connection count of ip.
func openConns(l *connLimiter, ip string) int32 {
	k, _ := keyOfIP(net.ParseIP(ip))
	s := &l.shards[shardOf(k)]
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[k]
}

// TestFreshHitWithLimitsAllocatesNothing: with the rate limit (and the
// connection cap) on, a fresh hit still allocates nothing.
func TestFreshHitWithLimitsAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race (sync.Pool drops items); `go test ./edge` checks this")
	}
	o := newTestOrigin(t, nil, static(string(make([]byte, 1024)), "Cache-Control: max-age=3600"))
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) {
		c.Cache.OffheapMinSize = 0
		c.Server.RateLimit = RateLimitConfig{Rate: 1e9, Burst: 1 << 30, Exempt: []string{"10.0.0.0/8"}}
		c.Server.MaxConnsPerIP = 8
	})
	ctx := warmHit(t, n, "/1k")
	allocs := testing.AllocsPerRun(1000, func() {
		ctx.Response.Reset()
		n.pipe.handle(ctx)
	})
	if allocs != 0 {
		t.Fatalf("fresh hit with limits on allocates %.1f times per request, want 0", allocs)
	}
	if n.pipe.set().rate.clients() != 1 {
		t.Fatalf("rate limiter tracks %d clients, want 1 (the hits went through it)", n.pipe.set().rate.clients())
	}
}

// BenchmarkFreshHit1KRateLimited is BenchmarkFreshHit1K with the rate
// limiter on (never refusing): the cost of the bucket per request.
func BenchmarkFreshHit1KRateLimited(b *testing.B) {
	o := newTestOrigin(b, nil, static(string(make([]byte, 1024)), "Cache-Control: max-age=3600"))
	n := newTestNode(b, o.srv.URL, nil, func(c *Config) {
		c.Cache.OffheapMinSize = 0
		c.Server.RateLimit = RateLimitConfig{Rate: 1e9, Burst: 1 << 30}
	})
	ctx := warmHit(b, n, "/1k")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ctx.Response.Reset()
		n.pipe.handle(ctx)
	}
}
