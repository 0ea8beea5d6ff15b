package cache_test

import (
	"fmt"
	"time"

	"github.com/edgeshield/edgeshield/cache"
)

// A response is checked for storability, turned into an Entry, and later a
// request decides how the stored entry may be used.
func Example() {
	received := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	var resp cache.ResponseMeta
	resp.Status, resp.AgeHeader, resp.Date = 200, -1, received
	resp.CC.Reset()
	cache.ParseCacheControl(&resp.CC, []byte("public, max-age=60, stale-while-revalidate=30"))

	req := cache.RequestMeta{Method: "GET"}
	req.CC.Reset()

	var policy cache.Policy
	ok, reason := policy.Storable(&req, &resp)
	fmt.Printf("storable: %v %q\n", ok, reason)

	e := &cache.Entry{Key: []byte("example.com/app.js"), Status: 200, StoredAt: received}
	e.SetFreshness(policy.Freshness(&resp, received, received))

	for _, after := range []time.Duration{10 * time.Second, 75 * time.Second, 2 * time.Minute} {
		fmt.Printf("after %v: %v\n", after, cache.Use(e, &req, received.Add(after)))
	}
	// Output:
	// storable: true ""
	// after 10s: fresh
	// after 1m15s: stale-while-revalidate
	// after 2m0s: revalidate
}

func ExampleParseRange() {
	rs, err := cache.ParseRange(nil, []byte("bytes=0-99, -100"), 1000)
	fmt.Println(rs, err)
	_, err = cache.ParseRange(nil, []byte("bytes=5000-"), 1000)
	fmt.Println(err)
	// Output:
	// [{0 99} {900 999}] <nil>
	// cache: range not satisfiable
}
