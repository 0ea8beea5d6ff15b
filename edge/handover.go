package edge

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Binary upgrade (issue 13). The caller (cmd/edgeshield, with tableflip)
// gives the node its sockets through Options.Listen and ListenPacket, so a
// new process inherits the ones of the process it replaces: the listening
// sockets are shared by both processes for a moment and the kernel's accept
// queue never stops, so no connection is refused. Gossip cannot be
// inherited (memberlist binds its own sockets): PauseGossip releases its
// port before the new process starts (cluster.Pause explains why that is
// not a leave), ResumeGossip takes it back when the new process failed.
// Once the new process is ready, Handover ends this one without a failed
// request: see there.

// listenTCP opens a TCP listener through Options.Listen (net.Listen by
// default) and keeps it for Handover, which closes it to stop accepting.
// Closing it again (fasthttp's Shutdown does) is a no-op.
func (n *Node) listenTCP(addr string) (net.Listener, error) {
	listen := n.opts.Listen
	if listen == nil {
		listen = net.Listen
	}
	ln, err := listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &socket{Listener: ln, open: &n.openConns}
	n.sockMu.Lock()
	n.sockets = append(n.sockets, s)
	n.sockMu.Unlock()
	return s, nil
}

// listenUDP opens the HTTP/3 socket through Options.ListenPacket
// (net.ListenPacket by default).
func (n *Node) listenUDP(addr string) (net.PacketConn, error) {
	if n.opts.ListenPacket != nil {
		return n.opts.ListenPacket("udp", addr)
	}
	return net.ListenPacket("udp", addr)
}

// socket is a listener that counts the connections it accepted that are
// still open (Handover waits for them), and whose Close is idempotent:
// Handover closes it first, fasthttp's Shutdown later, and only the first
// close is reported.
type socket struct {
	net.Listener
	open *atomic.Int64 // the node's openConns
	once sync.Once
	err  error
}

func (s *socket) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	s.open.Add(1)
	return &countedConn{Conn: c, open: s.open}, nil
}

// countedConn leaves the count when it is first closed.
type countedConn struct {
	net.Conn
	open *atomic.Int64
	once sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.open.Add(-1) })
	return err
}

func (s *socket) Close() error {
	s.once.Do(func() { s.err = s.Listener.Close() })
	return s.err
}

// PauseGossip releases the gossip port so that an upgraded process can bind
// it and join as this node (cluster.Pause). No-op without a cluster.
func (n *Node) PauseGossip() error {
	if n.peers == nil {
		return nil
	}
	return n.peers.c.Pause()
}

// ResumeGossip takes the gossip port back after a failed upgrade
// (cluster.Resume). No-op without a cluster or when not paused.
func (n *Node) ResumeGossip() error {
	if n.peers == nil {
		return nil
	}
	return n.peers.c.Resume()
}

// Handover ends this node after a new process took over its sockets (it is
// ready and accepting on them): nginx's QUIT after USR2. It stops accepting
// at once (the new process accepts everything from now on; no readiness
// delay is needed since nothing is refused), answers every request still
// arriving on open connections with "Connection: close" for up to grace, so
// that clients close their keep-alive connections after a response rather
// than find them closed under a request they just sent, then shuts down as
// Shutdown does without the drain delay: the idle connections left are
// closed, in-flight requests and background fills finish (bounded by ctx).
func (n *Node) Handover(ctx context.Context, grace time.Duration) error {
	n.handingOver.Store(true)
	n.log.Info("handover: the new process serves; closing keep-alive connections after their next response", "grace", grace)
	n.sockMu.Lock()
	for _, s := range n.sockets {
		s.Close()
	}
	n.sockMu.Unlock()
	n.waitConnsClosed(ctx, grace)
	return n.Shutdown(ctx)
}

// waitConnsClosed waits until no connection accepted by this process is
// open, grace has passed or ctx ends.
func (n *Node) waitConnsClosed(ctx context.Context, grace time.Duration) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	deadline := time.After(grace)
	for {
		open := n.openConns.Load()
		if open == 0 {
			return
		}
		select {
		case <-t.C:
		case <-deadline:
			n.log.Info("handover: grace over; closing idle connections", "open", open)
			return
		case <-ctx.Done():
			return
		}
	}
}

// closeOnHandover adds "Connection: close" to every response once Handover
// began (RFC 9112 §9.6: the client then opens its next connection, which
// the new process accepts, instead of reusing one this process closes).
func (n *Node) closeOnHandover(h fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		h(ctx)
		if n.handingOver.Load() {
			ctx.SetConnectionClose()
		}
	}
}
