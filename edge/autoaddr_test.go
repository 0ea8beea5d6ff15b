package edge

import (
	"errors"
	"net"
	"strings"
	"testing"
)

// TestResolveAutoAddrs: "auto" in cluster.advertise / peer_advertise becomes
// the host name's first non-loopback address (with peer_listen's port for
// the peer address); other values stay; no usable address is an error
// naming the key.
func TestResolveAutoAddrs(t *testing.T) {
	lookup := func(ips ...string) func(string) ([]net.IP, error) {
		return func(string) ([]net.IP, error) {
			if len(ips) == 0 {
				return nil, errors.New("no such host")
			}
			var out []net.IP
			for _, s := range ips {
				out = append(out, net.ParseIP(s))
			}
			return out, nil
		}
	}
	tests := []struct {
		name, adv, peerAdv       string
		ips                      []string
		wantAdv, wantPeer, inErr string
	}{
		{"both auto", "auto", "auto", []string{"127.0.1.1", "172.18.0.5"}, "172.18.0.5", "172.18.0.5:7947", ""},
		{"advertise only", "auto", "", []string{"10.1.2.3"}, "10.1.2.3", "", ""},
		{"peer only", "10.9.9.9", "auto", []string{"10.1.2.3"}, "10.9.9.9", "10.1.2.3:7947", ""},
		{"none", "", "", nil, "", "", ""},
		{"loopback only", "auto", "", []string{"127.0.0.1"}, "", "", "cluster.advertise"},
		{"unresolvable peer", "", "auto", nil, "", "", "cluster.peer_advertise"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Cluster.AdvertiseAddr, c.Cluster.PeerAdvertise = tt.adv, tt.peerAdv
			c.Cluster.PeerListen = "0.0.0.0:7947"
			err := resolveAutoAddrs(&c, lookup(tt.ips...))
			if tt.inErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.inErr) {
					t.Fatalf("got error %v, want one naming %s", err, tt.inErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Cluster.AdvertiseAddr != tt.wantAdv || c.Cluster.PeerAdvertise != tt.wantPeer {
				t.Errorf("got advertise %q peer_advertise %q, want %q %q", c.Cluster.AdvertiseAddr, c.Cluster.PeerAdvertise, tt.wantAdv, tt.wantPeer)
			}
		})
	}
}
