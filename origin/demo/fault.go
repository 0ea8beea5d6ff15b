package demo

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// Request headers that inject faults into one request.
const (
	HeaderDelay  = "X-Origin-Delay"  // Go duration ("200ms"): wait before responding
	HeaderStatus = "X-Origin-Status" // 200..599: answer with this status and a short body
	HeaderReset  = "X-Origin-Reset"  // "1"/"true": reset the connection, no response
	HeaderStall  = "X-Origin-Stall"  // Go duration: send headers and half the body, stall, send the rest
)

// faultPlan is what happens to one request.
type faultPlan struct {
	delay  time.Duration
	status int
	reset  bool
	stall  time.Duration
}

// planFaults combines the first firing Config.Faults rule with the fault
// headers: delays add up, Reset from either applies, X-Origin-Status
// overrides the rule's Status.
func (s *Server) planFaults(ctx *fasthttp.RequestCtx, path []byte) (faultPlan, error) {
	var p faultPlan
	for i := range s.cfg.Faults {
		f := &s.cfg.Faults[i]
		if !bytes.HasPrefix(path, []byte(f.PathPrefix)) {
			continue
		}
		if f.Rate > 0 && f.Rate < 1 && rand.Float64() >= f.Rate {
			continue
		}
		p = faultPlan{delay: f.Delay, status: f.Status, reset: f.Reset}
		break
	}
	hdr := &ctx.Request.Header
	if v := hdr.Peek(HeaderDelay); len(v) > 0 {
		d, err := parseFaultDuration(string(v))
		if err != nil {
			return p, fmt.Errorf("bad %s: %w", HeaderDelay, err)
		}
		p.delay += d
	}
	if v := hdr.Peek(HeaderStatus); len(v) > 0 {
		n, err := parseBounded(string(v), 200, 599)
		if err != nil {
			return p, fmt.Errorf("bad %s: %w", HeaderStatus, err)
		}
		p.status = int(n)
	}
	if v := hdr.Peek(HeaderReset); len(v) > 0 {
		b, err := strconv.ParseBool(string(v))
		if err != nil {
			return p, fmt.Errorf("bad %s: %w", HeaderReset, err)
		}
		p.reset = p.reset || b
	}
	if v := hdr.Peek(HeaderStall); len(v) > 0 {
		d, err := parseFaultDuration(string(v))
		if err != nil {
			return p, fmt.Errorf("bad %s: %w", HeaderStall, err)
		}
		p.stall = d
	}
	return p, nil
}

// parseFaultDuration parses a Go duration in [0, 10m].
func parseFaultDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, err
	}
	if d < 0 || d > maxFaultDuration {
		return 0, fmt.Errorf("%v outside 0..%v", d, maxFaultDuration)
	}
	return d, nil
}

// resetConn drops the connection without a response. SO_LINGER 0 makes the
// close send a TCP RST instead of a FIN, which is what a crashing origin or
// a middlebox timeout looks like to a client.
func (s *Server) resetConn(ctx *fasthttp.RequestCtx) {
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(abortConn)
}

func abortConn(c net.Conn) {
	if u, ok := c.(interface{ UnsafeConn() net.Conn }); ok {
		c = u.UnsafeConn()
	}
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = l.SetLinger(0)
	}
	_ = c.Close()
}

// stall replaces the normal write of the response prepared in ctx: it sends
// the header and the first half of the body, waits d (or until Close), sends
// the rest and closes the connection. The body is given a Content-Length so
// the client can tell that the stalled response is incomplete.
func (s *Server) stall(ctx *fasthttp.RequestCtx, d time.Duration) {
	resp := &ctx.Response
	body := append([]byte(nil), resp.Body()...) // materialises streamed bodies
	h := &resp.Header
	if !ctx.IsHead() && h.StatusCode() != fasthttp.StatusNoContent && h.StatusCode() != fasthttp.StatusNotModified {
		h.SetContentLength(len(body))
	}
	h.SetConnectionClose()
	h.SetServer(serverName)
	head := append([]byte(nil), h.Header()...)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		if !s.enterHijack() {
			return
		}
		defer s.hijackWG.Done()
		// A hijacked connection has no deadlines. Without one, a client
		// that stops reading would block these writes, and Close with them.
		stop := s.boundWrites(c)
		defer stop()
		half := len(body) / 2
		if _, err := c.Write(append(head, body[:half]...)); err != nil {
			return
		}
		s.wait(d)
		select {
		case <-s.done: // the watcher has set, or is setting, the close grace
		default:
			_ = c.SetWriteDeadline(time.Now().Add(hijackWriteTimeout))
		}
		_, _ = c.Write(body[half:])
	})
}

// hijackWriteTimeout bounds each write on a hijacked connection, and
// closeGrace how long writes may continue once Close has started.
const (
	hijackWriteTimeout = 30 * time.Second
	closeGrace         = time.Second
)

// boundWrites gives c a write deadline now and a short one when Close
// starts; the returned func releases the watcher.
func (s *Server) boundWrites(c net.Conn) (stop func()) {
	_ = c.SetWriteDeadline(time.Now().Add(hijackWriteTimeout))
	finished := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-s.done:
			_ = c.SetWriteDeadline(time.Now().Add(closeGrace))
		case <-finished:
		}
	}()
	return func() {
		close(finished)
		<-watched
	}
}

// enterHijack registers a hijack handler with Close; false once Close has
// started, in which case the handler must return at once.
func (s *Server) enterHijack() bool {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return false
	}
	s.hijackWG.Add(1)
	return true
}
