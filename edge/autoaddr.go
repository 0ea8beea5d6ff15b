package edge

import (
	"fmt"
	"net"
	"net/netip"
	"os"
)

// autoAddr is the value of cluster.advertise and cluster.peer_advertise that
// asks for this host's own address, for replicas that cannot know it in
// advance (docker-compose --scale, Kubernetes pods).
const autoAddr = "auto"

// resolveAutoAddrs replaces cluster.advertise and cluster.peer_advertise
// "auto" with the address the host name resolves to. In a container that
// is its address on its first network: Docker writes it for the container's
// host name into /etc/hosts, which the resolver reads without DNS. An
// explicit bind of 0.0.0.0 alone is refused by the cluster (memberlist would
// guess an interface); "auto" is the operator saying which guess is right.
func resolveAutoAddrs(c *Config, lookup func(host string) ([]net.IP, error)) error {
	cc := &c.Cluster
	if cc.AdvertiseAddr != autoAddr && cc.PeerAdvertise != autoAddr {
		return nil
	}
	host, err := os.Hostname()
	if err != nil {
		return &ConfigError{Key: "cluster.advertise", Msg: fmt.Sprintf("auto: host name: %v", err)}
	}
	ips, err := lookup(host)
	var ip netip.Addr
	for _, a := range ips {
		if p, ok := netip.AddrFromSlice(a); ok && !p.Unmap().IsLoopback() && !p.Unmap().IsUnspecified() {
			ip = p.Unmap()
			break
		}
	}
	key := "cluster.advertise"
	if cc.AdvertiseAddr != autoAddr {
		key = "cluster.peer_advertise"
	}
	if !ip.IsValid() {
		return &ConfigError{Key: key, Msg: fmt.Sprintf("auto: host name %q resolves to no non-loopback address (%v %v); set the address", host, ips, err)}
	}
	if cc.AdvertiseAddr == autoAddr {
		cc.AdvertiseAddr = ip.String() // the bind port
	}
	if cc.PeerAdvertise == autoAddr {
		_, port, err := net.SplitHostPort(cc.PeerListen)
		if err != nil {
			return &ConfigError{Key: "cluster.peer_listen", Msg: fmt.Sprintf("want host:port, got %q", cc.PeerListen)}
		}
		cc.PeerAdvertise = net.JoinHostPort(ip.String(), port)
	}
	return nil
}
