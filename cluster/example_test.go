package cluster_test

import (
	"context"
	"errors"
	"log"
	"time"

	"github.com/edgeshield/edgeshield/cluster"
)

// A miss is forwarded to the first owner that answers; a peer that fails is
// marked down so the following requests skip it at once. Compiled, not run.
func ExampleCluster_Owners() {
	c, err := cluster.New(cluster.Config{
		NodeName:  "edge-1",
		BindAddr:  "10.0.0.1:7946",
		PeerAddr:  "10.0.0.1:8081",
		Region:    "eu",
		Seeds:     []string{"10.0.0.2:7946", "10.0.0.3:7946"},
		SecretKey: []byte("0123456789abcdef0123456789abcdef"),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	fetchFromPeer := func(addr string, key []byte) error { return errors.New("connection refused") }
	key := []byte("example.com/app.js")
	var buf [8]cluster.Member // no allocation per lookup
	for _, m := range c.Owners(buf[:0], key) {
		if m.Self {
			break // this node owns the key: fetch from the origin
		}
		if err := fetchFromPeer(m.PeerAddr, key); err != nil {
			c.MarkDown(m.Name, 10*time.Second)
			continue // next owner in rendezvous order
		}
		return
	}
	// ... origin fetch
}

// A purge that waits for every member, as an admin "?wait=" call would.
func ExampleCluster_PurgeWait() {
	var c *cluster.Cluster // from cluster.New
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	confirmed, missing, err := c.PurgeWait(ctx, cluster.Purge{Kind: cluster.KindTag, Value: "product-42"})
	if errors.Is(err, cluster.ErrPurgeIncomplete) {
		log.Printf("purge applied on %v, not confirmed by %v", confirmed, missing)
	}
}
