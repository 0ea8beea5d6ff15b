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
	flights := origin.NewGroup()

	// Three concurrent misses for the same key: one leader, two waiters.
	type requester struct {
		f      *origin.Flight
		leader bool
	}
	var reqs []requester
	for range 3 {
		f, leader := flights.Join("/greeting")
		reqs = append(reqs, requester{f, leader})
	}

	var wg sync.WaitGroup
	for _, r := range reqs {
		if !r.leader {
			continue
		}
		f := r.f
		wg.Go(func() {
			resp, err := client.Do(context.Background(), &origin.Request{Method: "GET", RequestURI: "/greeting"})
			if err != nil {
				f.Release(err) // waiters map err to 502/504
				return
			}
			defer resp.Body.Close()
			f.Publish(origin.Head{Status: resp.Status, Header: resp.Header, ContentLength: resp.ContentLength})
			_, err = io.Copy(f, resp.Body)
			f.Finish(err)
			if body, ok := f.Bytes(); ok {
				_ = body // store it, then let new requests hit the store
			}
			flights.Forget("/greeting", f)
		})
	}

	for _, r := range reqs {
		head, err := r.f.Wait(context.Background())
		if err != nil {
			fmt.Println("fetch on your own:", err)
			continue
		}
		body, err := r.f.Reader()
		if err != nil {
			fmt.Println("fetch on your own:", err)
			continue
		}
		b, _ := io.ReadAll(body)
		body.Close()
		fmt.Printf("leader=%v status=%d body=%q\n", r.leader, head.Status, b)
	}
	wg.Wait()
	fmt.Println("origin requests:", served.Load())
	// Output:
	// leader=true status=200 body="hello, edge"
	// leader=false status=200 body="hello, edge"
	// leader=false status=200 body="hello, edge"
	// origin requests: 1
}
