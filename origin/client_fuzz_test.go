package origin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// FuzzClientResponse feeds arbitrary bytes to the client as the upstream's
// answer. Whatever they are, Do and Body.Read must not panic or hang, and
// every error must carry exactly one origin sentinel. The seed corpus is in
// testdata/fuzz/FuzzClientResponse (plain `go test` runs it).
func FuzzClientResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
		"HTTP/1.0 200 OK\r\n\r\nclose-delimited body",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Length: 11\r\n\r\n0123456789",
		"\x16\x03\x01\x00\x05hello",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		wd := time.AfterFunc(8*time.Second, func() { panic(fmt.Sprintf("HANG on %q", data)) })
		defer wd.Stop()
		// In-memory connections: fuzzing over loopback TCP exhausts the
		// ephemeral ports with TIME_WAIT sockets within a minute.
		c, err := NewClient(ClientConfig{URL: "http://origin.test", HeaderTimeout: 2 * time.Second, IdleReadTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		defer wg.Wait() // after Close: an unread tail blocks the pipe writer
		defer c.Close() // until the connection is closed
		c.dialContext = func(context.Context, string, string) (net.Conn, error) {
			client, server := net.Pipe()
			wg.Go(func() {
				defer server.Close()
				if _, err := readRequest(bufio.NewReader(server), nil); err != nil {
					return
				}
				server.Write(data)
			})
			return client, nil
		}
		resp, err := c.Do(context.Background(), &Request{Method: "GET", RequestURI: "/"})
		if err != nil {
			sentinel(t, err)
			return
		}
		defer resp.Body.Close()
		if resp.Status < 100 || resp.Status > 999 {
			t.Errorf("status: got %d, want a 3-digit code", resp.Status)
		}
		n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		if err != nil && !errors.Is(err, io.EOF) {
			sentinel(t, err)
		}
		if resp.ContentLength >= 0 && err == nil && n != resp.ContentLength && n < 1<<20 {
			t.Errorf("body: got %d bytes, want Content-Length %d", n, resp.ContentLength)
		}
	})
}
