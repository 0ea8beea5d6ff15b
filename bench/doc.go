// Package bench is Edgeshield's load harness and uptime probe.
//
// The load generator is open loop: a scheduler issues requests at the
// intended times of a constant (steady) or linearly ramping (rush) arrival
// rate, and every latency is measured from the request's intended send time,
// not from the moment a worker got round to sending it. A server that stalls
// therefore shows the stall in the percentiles of every request scheduled
// during it, instead of hiding it by sending fewer requests (the "coordinated
// omission" of closed-loop tools). In-flight requests are bounded: a request
// whose turn comes while the bound is reached is not delayed but counted as
// an error of kind "client-overload", so an overloaded client can never pass
// for a slow server.
//
// Latencies are recorded in HDR histograms (hdrhistogram-go), a few shards
// merged at the end, plus one coarser histogram per timeline bucket (one
// second by default). Capacity search ramps the rate up by doubling until an
// SLO breaks and then bisects to within 5 %. Reports are a text summary, JSON
// and an HTML page whose charts are drawn by gonum/plot as inline SVG.
//
// The Prober is a Pingdom-style uptime monitor: periodic checks, uptime,
// response time, incidents and a webhook on every state change.
//
// Concurrency: a Runner is immutable after New and safe for concurrent use;
// each Run (and each step of Capacity) has its own connections, workers and
// recorders, starts every goroutine it needs and waits for all of them
// before returning, so nothing needs closing. Config.Progress and
// CapacityConfig.OnStep are called from one goroutine at a time. A Prober's
// Check, Run and Report may be called from different goroutines. Results are
// plain values, safe to read once returned.
//
// The package imports nothing of the node: it drives any HTTP/1.1 URL.
package bench
