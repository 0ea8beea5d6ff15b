package demo_test

import (
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/edgeshield/edgeshield/origin/demo"
)

func Example() {
	origin, err := demo.New(demo.Config{
		Faults: []demo.Fault{{PathPrefix: "/img/", Status: 503, Rate: 1}},
	})
	if err != nil {
		panic(err)
	}
	if err := origin.Start("127.0.0.1:0"); err != nil {
		panic(err)
	}
	defer origin.Close()

	client := &http.Client{Timeout: 5 * time.Second}
	for _, path := range []string{"/bench/1k.bin", "/img/logo.svg", "/bench/1k.bin"} {
		resp, err := client.Get(origin.URL() + path)
		if err != nil {
			panic(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		fmt.Printf("%s %d etag=%s\n", path, resp.StatusCode, resp.Header.Get("ETag"))
	}
	fmt.Println("origin saw /bench/1k.bin", origin.Count("/bench/1k.bin"), "times")
	// Output:
	// /bench/1k.bin 200 etag="a2aaca58cfe7b31eb338156b16a3c602"
	// /img/logo.svg 503 etag=
	// /bench/1k.bin 200 etag="a2aaca58cfe7b31eb338156b16a3c602"
	// origin saw /bench/1k.bin 2 times
}
