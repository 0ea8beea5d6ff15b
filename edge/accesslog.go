package edge

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
)

// accessLog writes one line per request on the public listeners, in the
// manner of nginx's access_log with a buffer: lines are built without
// allocating in a reused buffer, collected in a 64 KiB bufio.Writer under a
// mutex and flushed at least every second and on Close, so a request never
// waits on a disk write unless the buffer is full. Reopen swaps the file
// (SIGHUP, after logrotate moved it).
type accessLog struct {
	format string // "combined" or "json"
	path   string // "stdout", "stderr" or a file

	mu      sync.Mutex // guards everything below
	f       *os.File   // nil for stdout/stderr
	w       *bufio.Writer
	line    []byte
	lastSec int64  // Unix second of stamp
	stamp   []byte // lastSec formatted for format
	closed  bool

	stop chan struct{}
	done chan struct{}
}

func newAccessLog(path, format string) (*accessLog, error) {
	l := &accessLog{format: format, path: path, line: make([]byte, 0, 512),
		stop: make(chan struct{}), done: make(chan struct{})}
	var out io.Writer
	switch path {
	case "stdout":
		out = os.Stdout
	case "stderr":
		out = os.Stderr
	default:
		f, err := openLogFile(path)
		if err != nil {
			return nil, err
		}
		l.f, out = f, f
	}
	l.w = bufio.NewWriterSize(out, 64<<10)
	go l.flusher()
	return l, nil
}

// ReopenLogs reopens the access log file (after logrotate moved it).
func (n *Node) ReopenLogs() error {
	if a := n.pipe.set().access; a != nil {
		return a.Reopen()
	}
	return nil
}

func openLogFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
}

func (l *accessLog) flusher() {
	defer close(l.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.mu.Lock()
			if !l.closed {
				l.w.Flush()
			}
			l.mu.Unlock()
		}
	}
}

// Reopen flushes and reopens the file (a no-op for stdout and stderr), for
// log rotation: the old file is closed once its buffered lines are in it.
func (l *accessLog) Reopen() error {
	if l.f == nil {
		return nil
	}
	f, err := openLogFile(l.path)
	if err != nil {
		return fmt.Errorf("access log: reopen %s: %w", l.path, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		f.Close()
		return nil
	}
	l.w.Flush()
	old := l.f
	l.f = f
	l.w.Reset(f)
	return old.Close()
}

// Close flushes what is buffered and closes the file. Lines logged after
// Close are dropped.
func (l *accessLog) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	err := l.w.Flush()
	if l.f != nil {
		if cerr := l.f.Close(); err == nil {
			err = cerr
		}
	}
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	return err
}

// Log records one request: what the handler answered (status, the body
// length it set, "-" when streamed with no length), the cache outcome and
// how long the handler took (time to first byte inside the node).
func (l *accessLog) Log(ctx *fasthttp.RequestCtx, outcome string, now time.Time, took time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	if sec := now.Unix(); sec != l.lastSec || l.stamp == nil {
		l.lastSec = sec
		if l.format == "json" {
			l.stamp = now.UTC().AppendFormat(l.stamp[:0], time.RFC3339)
		} else {
			l.stamp = now.AppendFormat(l.stamp[:0], "02/Jan/2006:15:04:05 -0700")
		}
	}
	if l.format == "json" {
		l.line = l.appendJSON(l.line[:0], ctx, outcome, took)
	} else {
		l.line = l.appendCombined(l.line[:0], ctx, outcome, took)
	}
	l.w.Write(l.line)
}

// appendCombined writes nginx's "combined" format followed by the cache
// outcome, the handler's time in seconds and the Host:
//
//	127.0.0.1 - - [22/Nov/2026:07:23:54 +0000] "GET /a HTTP/1.1" 200 5 "-" "curl/8.5" hit 0.000042 "example.com"
func (l *accessLog) appendCombined(b []byte, ctx *fasthttp.RequestCtx, outcome string, took time.Duration) []byte {
	b = appendRemoteIP(b, ctx.RemoteAddr())
	b = append(b, " - - ["...)
	b = append(b, l.stamp...)
	b = append(b, `] "`...)
	b = appendEscaped(b, ctx.Method(), false)
	b = append(b, ' ')
	b = appendEscaped(b, ctx.Request.Header.RequestURI(), false)
	b = append(b, ' ')
	b = appendEscaped(b, ctx.Request.Header.Protocol(), false)
	b = append(b, `" `...)
	b = strconv.AppendInt(b, int64(ctx.Response.StatusCode()), 10)
	b = append(b, ' ')
	b = appendBytesSent(b, ctx)
	b = append(b, ` "`...)
	b = appendOrDash(b, ctx.Request.Header.Referer(), false)
	b = append(b, `" "`...)
	b = appendOrDash(b, ctx.Request.Header.UserAgent(), false)
	b = append(b, `" `...)
	b = append(b, outcome...)
	b = append(b, ' ')
	b = strconv.AppendFloat(b, took.Seconds(), 'f', 6, 64)
	b = append(b, ` "`...)
	b = appendOrDash(b, ctx.Request.Header.Host(), false)
	b = append(b, "\"\n"...)
	return b
}

// appendJSON writes one JSON object per line.
func (l *accessLog) appendJSON(b []byte, ctx *fasthttp.RequestCtx, outcome string, took time.Duration) []byte {
	b = append(b, `{"time":"`...)
	b = append(b, l.stamp...)
	b = append(b, `","remote":"`...)
	b = appendRemoteIP(b, ctx.RemoteAddr())
	b = append(b, `","host":"`...)
	b = appendEscaped(b, ctx.Request.Header.Host(), true)
	b = append(b, `","method":"`...)
	b = appendEscaped(b, ctx.Method(), true)
	b = append(b, `","uri":"`...)
	b = appendEscaped(b, ctx.Request.Header.RequestURI(), true)
	b = append(b, `","proto":"`...)
	b = appendEscaped(b, ctx.Request.Header.Protocol(), true)
	b = append(b, `","status":`...)
	b = strconv.AppendInt(b, int64(ctx.Response.StatusCode()), 10)
	b = append(b, `,"bytes":`...)
	if n := bodyLength(ctx); n >= 0 {
		b = strconv.AppendInt(b, n, 10)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"referer":"`...)
	b = appendEscaped(b, ctx.Request.Header.Referer(), true)
	b = append(b, `","user_agent":"`...)
	b = appendEscaped(b, ctx.Request.Header.UserAgent(), true)
	b = append(b, `","cache":"`...)
	b = append(b, outcome...)
	b = append(b, `","duration":`...)
	b = strconv.AppendFloat(b, took.Seconds(), 'f', 6, 64)
	b = append(b, "}\n"...)
	return b
}

// bodyLength is the length of the body sent: 0 for HEAD, 304 and 204,
// Content-Length for streams (-1 when unknown), else the buffered body's.
func bodyLength(ctx *fasthttp.RequestCtx) int64 {
	r := &ctx.Response
	switch {
	case ctx.IsHead() || r.StatusCode() == fasthttp.StatusNotModified || r.StatusCode() == fasthttp.StatusNoContent:
		return 0 // fasthttp sends no body, whatever the handler set
	case r.IsBodyStream():
		return int64(r.Header.ContentLength())
	}
	return int64(len(r.Body()))
}

func appendBytesSent(b []byte, ctx *fasthttp.RequestCtx) []byte {
	if n := bodyLength(ctx); n >= 0 {
		return strconv.AppendInt(b, n, 10)
	}
	return append(b, '-')
}

func appendRemoteIP(b []byte, a net.Addr) []byte {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap().AppendTo(b)
		}
	}
	return append(b, '-')
}

func appendOrDash(b, v []byte, json bool) []byte {
	if len(v) == 0 {
		return append(b, '-')
	}
	return appendEscaped(b, v, json)
}

const hexDigits = "0123456789abcdef"

// appendEscaped appends v so that a client cannot forge or break lines:
// for JSON, a valid string body (\", \\, \u00XX for controls, U+FFFD for
// invalid UTF-8); otherwise nginx's escaping (\", \\ and \xXX for bytes
// outside printable ASCII).
func appendEscaped(b, v []byte, json bool) []byte {
	for i := 0; i < len(v); {
		c := v[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
			i++
		case c >= 0x20 && c < 0x7f:
			b = append(b, c)
			i++
		case !json:
			b = append(b, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
			i++
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			i++
		default:
			r, size := utf8.DecodeRune(v[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, "\ufffd"...)
			} else {
				b = append(b, v[i:i+size]...)
			}
			i += size
		}
	}
	return b
}
