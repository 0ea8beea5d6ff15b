package origin_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/edgeshield/edgeshield/origin"
	"github.com/valyala/fasthttp"
)

// The edge's miss path: the first requester of a key leads one upstream
// fetch from a goroutine of its own (so that its client going away does not
// cancel the fetch for the others); everyone, the leader's client included,
// streams the body from the flight.
func ExampleGroup() {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	var served atomic.Int64
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		served.Add(1)
		ctx.SetBodyString("hello, edge")
	}}
	go srv.Serve(ln)
	defer srv.Shutdown()

	client, _ := origin.NewClient(origin.ClientConfig{URL: "http://" + ln.Addr().String()})
	defer client.Close()
	var wg sync.WaitGroup
	flights := origin.NewGroup(origin.GroupConfig[string]{
		Go:   func(fn func()) bool { wg.Go(fn); return true }, // owned and waited for
		Keep: func(meta string, body []byte) { _ = body },     // store it: new requests then hit the store
	})
	fetch := func(ctx context.Context, w *origin.Writer[string]) error {
		resp, err := client.Do(ctx, &origin.Request{Method: "GET", RequestURI: "/greeting"})
		if err != nil {
			return err // waiters map err to 502/504
		}
		defer resp.Body.Close()
		w.Publish(origin.Head[string]{Status: resp.Status, Header: resp.Header, ContentLength: resp.ContentLength, Meta: "entry"})
		_, err = io.Copy(w, resp.Body)
		return err
	}

	// Three concurrent misses for the same key: one leader, two waiters.
	var calls []origin.Call[string]
	for range 3 {
		calls = append(calls, flights.Do("/greeting", fetch))
	}
	for _, c := range calls {
		head, err := c.Wait(context.Background())
		if err != nil {
			fmt.Println("fetch on your own:", err)
			continue
		}
		body, err := c.Reader()
		if err != nil {
			fmt.Println("fetch on your own:", err)
			continue
		}
		b, _ := io.ReadAll(body)
		body.Close()
		fmt.Printf("leader=%v status=%d body=%q\n", c.Leader(), head.Status, b)
	}
	wg.Wait()
	fmt.Println("origin requests:", served.Load())
	// Output:
	// leader=true status=200 body="hello, edge"
	// leader=false status=200 body="hello, edge"
	// leader=false status=200 body="hello, edge"
	// origin requests: 1
}
