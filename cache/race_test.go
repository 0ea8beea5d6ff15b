//go:build race

package cache

// raceEnabled: the race detector makes sync.Pool drop items on purpose, so
// ristretto's pooled access buffers allocate; allocation tests skip then.
const raceEnabled = true
