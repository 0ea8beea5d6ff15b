package cluster

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestMetaRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		in      nodeMeta
		wantErr bool
	}{
		{"full", nodeMeta{PeerAddr: "10.0.0.1:8081", PublicAddr: "203.0.113.7:443", Region: "eu-west", Version: "1.2.3"}, false},
		{"minimal", nodeMeta{PeerAddr: "[::1]:8081"}, false},
		{"missing peer", nodeMeta{Region: "x"}, true},
		{"peer without port", nodeMeta{PeerAddr: "10.0.0.1"}, true},
		{"control chars", nodeMeta{PeerAddr: "10.0.0.1:1", Region: "a\x00b"}, true},
		{"too long", nodeMeta{PeerAddr: "10.0.0.1:1", Region: strings.Repeat("r", 256)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := encodeMeta(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("encodeMeta: got err %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if len(b) > memberlist.MetaMaxSize {
				t.Fatalf("encoded meta is %d bytes, want <= %d", len(b), memberlist.MetaMaxSize)
			}
			got, err := decodeMeta(b)
			if err != nil || got != tt.in {
				t.Fatalf("decodeMeta = %+v, %v; want %+v", got, err, tt.in)
			}
			// A newer version that appends fields still decodes.
			newer := append([]byte{wireVersion + 1}, b[1:]...)
			newer = appendString(newer, "future field")
			if got, err := decodeMeta(newer); err != nil || got != tt.in {
				t.Fatalf("decodeMeta(newer) = %+v, %v; want %+v", got, err, tt.in)
			}
		})
	}
}

func TestMessageRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 22, 1, 2, 3, 4, time.UTC)
	p := Purge{ID: "n1-abc-1", Kind: KindPrefix, Value: "example.com/img/", Hard: true, At: at, Origin: "n1"}
	m, err := decodeMsg(encodePurgeMsg(&p, flagWantAck|flagResend))
	if err != nil || m.typ != msgPurge || m.purge != p || m.flags&(flagWantAck|flagResend) != flagWantAck|flagResend {
		t.Fatalf("purge round trip = %+v, %v; want %+v with ack+resend flags", m, err, p)
	}
	m, err = decodeMsg(encodeAckMsg("id-1", "n2"))
	if err != nil || m.typ != msgAck || m.ackID != "id-1" || m.from != "n2" {
		t.Fatalf("ack round trip = %+v, %v", m, err)
	}
	m, err = decodeMsg(encodeLeaveMsg("n3"))
	if err != nil || m.typ != msgLeave || m.from != "n3" {
		t.Fatalf("leave round trip = %+v, %v", m, err)
	}
	ts := []Tombstone{{Purge: p, WantAck: true}, {Purge: Purge{ID: "x", Kind: KindTag, Value: "t", At: at, Origin: "n2"}}}
	got, err := decodeState(encodeState(ts))
	if err != nil || len(got) != 2 || got[0].p != ts[0].Purge || got[0].flags != flagWantAck|flagHard || got[1].p != ts[1].Purge {
		t.Fatalf("state round trip = %+v, %v", got, err)
	}
}

func TestDecodersRejectGarbage(t *testing.T) {
	p := Purge{ID: "i", Kind: KindURL, Value: "v", At: time.Unix(1, 0), Origin: "o"}
	valid := encodePurgeMsg(&p, 0)
	tests := []struct {
		name string
		msg  []byte
	}{
		{"empty", nil},
		{"unknown type", []byte{99, 1}},
		{"old version", []byte{msgPurge, 0}},
		{"truncated", valid[:len(valid)-1]},
		{"bad kind", func() []byte { b := bytes.Clone(valid); b[2] = 9; return b }()},
		{"huge length", []byte{msgAck, 1, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"ack without sender", encodeAckMsg("id", "")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if m, err := decodeMsg(tt.msg); err == nil {
				t.Fatalf("decodeMsg(%q) = %+v, want an error", tt.msg, m)
			}
		})
	}
	// A forged count cannot make decodeState allocate for a billion purges.
	forged := []byte{wireVersion, 0xff, 0xff, 0xff, 0xff, 0x0f}
	if _, err := decodeState(forged); err == nil {
		t.Fatalf("decodeState(forged count) succeeded, want an error")
	}
}

func FuzzDecodeMeta(f *testing.F) {
	b, _ := encodeMeta(nodeMeta{PeerAddr: "10.0.0.1:8081", PublicAddr: "1.2.3.4:443", Region: "eu", Version: "1"})
	f.Add(b)
	f.Add([]byte{})
	f.Add([]byte{1, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		// Whatever decodes must encode again and decode to the same value.
		again, err := encodeMeta(m)
		if err != nil {
			t.Fatalf("decoded meta %+v does not encode: %v", m, err)
		}
		if m2, err := decodeMeta(again); err != nil || m2 != m {
			t.Fatalf("re-decode = %+v, %v; want %+v", m2, err, m)
		}
	})
}

func FuzzDecodeMsg(f *testing.F) {
	p := Purge{ID: "n1-1", Kind: KindTag, Value: "product-1", At: time.Unix(1700000000, 0), Origin: "n1"}
	f.Add(encodePurgeMsg(&p, flagWantAck))
	f.Add(encodeAckMsg("n1-1", "n2"))
	f.Add(encodeLeaveMsg("n2"))
	f.Add([]byte{msgPurge, 1, 1, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMsg(b)
		if err != nil || m.typ != msgPurge {
			return
		}
		if err := m.purge.validate(); err != nil {
			t.Fatalf("decoded purge %+v does not validate: %v", m.purge, err)
		}
		m2, err := decodeMsg(encodePurgeMsg(&m.purge, m.flags&^flagHard))
		if err != nil || m2.purge != m.purge {
			t.Fatalf("re-decode = %+v, %v; want %+v", m2.purge, err, m.purge)
		}
	})
}

func FuzzDecodeState(f *testing.F) {
	p := Purge{ID: "n1-1", Kind: KindURL, Value: "example.com/", At: time.Unix(1700000000, 0), Origin: "n1"}
	f.Add(encodeState([]Tombstone{{Purge: p}, {Purge: p, WantAck: true}}))
	f.Add(encodeState(nil))
	f.Add([]byte{1, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := decodeState(b)
		if err != nil {
			return
		}
		for _, sp := range ps {
			if err := sp.p.validate(); err != nil {
				t.Fatalf("decoded purge %+v does not validate: %v", sp.p, err)
			}
		}
	})
}

// FuzzNotifyMsg feeds arbitrary user messages and push/pull state to a live
// node's delegate, as a peer holding the key could: nothing may panic, and
// the node must stay usable.
func FuzzNotifyMsg(f *testing.F) {
	p := Purge{ID: "n1-1", Kind: KindTag, Value: "t", At: time.Now(), Origin: "n1"}
	f.Add(encodePurgeMsg(&p, flagWantAck|flagResend))
	f.Add(encodeAckMsg("n1-1", "n2"))
	f.Add(encodeLeaveMsg("ghost"))
	f.Add(encodeState([]Tombstone{{Purge: p}}))
	cfg := fastConfig("fuzz")
	cfg.Logger = slog.New(slog.DiscardHandler) // f.Logf is not allowed inside the fuzz target
	n := startNode(f, cfg)
	d := delegate{n.Cluster}
	f.Fuzz(func(t *testing.T, b []byte) {
		d.NotifyMsg(b)
		d.MergeRemoteState(b, false)
		_ = d.NotifyAlive(&memberlist.Node{Name: "x", Meta: b})
		if _, ok := n.Owner([]byte("k")); !ok {
			t.Fatalf("node has no owner after garbage input")
		}
	})
}

// TestGarbagePeer runs raw memberlist peers that hold the cluster key but
// speak garbage: one with unusable metadata, one sending garbage user
// messages and push/pull state. The cluster refuses the first, ignores the
// garbage, and keeps working.
func TestGarbagePeer(t *testing.T) {
	key := []byte("0123456789abcdef")
	nodes := startCluster(t, 2, func(_ int, cfg *Config) { cfg.SecretKey = key })
	seed := nodes[0].GossipAddr()

	badMeta := startRaw(t, "bad-meta", key, garbageDelegate{meta: []byte{1, 0xff, 0xff}})
	if _, err := badMeta.Join([]string{seed}); err != nil {
		t.Logf("join of the bad-meta peer: %v", err)
	}
	validMeta, _ := encodeMeta(nodeMeta{PeerAddr: "127.0.0.1:1"})
	noisy := startRaw(t, "noisy", key, garbageDelegate{meta: validMeta, state: []byte{1, 0xff, 0xff, 0xff}})
	if _, err := noisy.Join([]string{seed}); err != nil {
		t.Fatalf("join of the noisy peer: %v", err)
	}
	eventually(t, 5*time.Second, func() (bool, string) {
		m := memberNamed(nodes[0].Members(), "noisy")
		return m.State == StateAlive, fmt.Sprintf("noisy peer not alive on n00: %v", names(nodes[0].Members()))
	})
	// The targets are built from the nodes' own addresses: the *Node values
	// Members returns are memberlist's live records, which its gossip
	// goroutines rewrite while we would read them (a data race under -race).
	var target []*memberlist.Node
	for _, n := range nodes {
		host, port, err := net.SplitHostPort(n.GossipAddr())
		if err != nil {
			t.Fatal(err)
		}
		p, _ := strconv.Atoi(port)
		target = append(target, &memberlist.Node{Name: n.LocalName(), Addr: net.ParseIP(host), Port: uint16(p)})
	}
	for i := range 200 {
		junk := bytes.Repeat([]byte{byte(i), byte(i * 7), msgPurge}, i%50)
		for _, to := range target {
			_ = noisy.SendBestEffort(to, junk)
			if i%20 == 0 {
				_ = noisy.SendReliable(to, junk)
			}
		}
	}
	if m := memberNamed(nodes[1].Members(), "bad-meta"); m.Name != "" {
		t.Fatalf("peer with garbage metadata is listed: %+v", m)
	}
	// The cluster still works: a purge reaches every real member.
	// The noisy peer never acks, so it is the only one missing.
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	confirmed, missing, _ := nodes[1].PurgeWait(ctx, Purge{Kind: KindURL, Value: "after-garbage"})
	if len(confirmed) != 2 || len(missing) != 1 || missing[0] != "noisy" {
		t.Fatalf("PurgeWait after garbage: confirmed %v missing %v, want n00+n01 and [noisy]", confirmed, missing)
	}
}

type garbageDelegate struct{ meta, state []byte }

func (g garbageDelegate) NodeMeta(int) []byte                 { return g.meta }
func (g garbageDelegate) NotifyMsg([]byte)                    {}
func (g garbageDelegate) GetBroadcasts(int, int) [][]byte     { return nil }
func (g garbageDelegate) LocalState(bool) []byte              { return g.state }
func (g garbageDelegate) MergeRemoteState(buf []byte, _ bool) {}

func startRaw(t *testing.T, name string, key []byte, d memberlist.Delegate) *memberlist.Memberlist {
	t.Helper()
	mc := memberlist.DefaultLocalConfig()
	mc.Name = name
	mc.BindAddr = "127.0.0.1"
	mc.BindPort = 0
	mc.SecretKey = key
	mc.Delegate = d
	lg, _ := testLogger(t, 0)
	mc.Logger = newMemberlistLog(lg, time.Now).logger()
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatalf("memberlist.Create: %v", err)
	}
	t.Cleanup(func() { _ = ml.Shutdown() })
	return ml
}
