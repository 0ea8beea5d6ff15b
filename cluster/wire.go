package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
)

// Wire formats. Everything a peer sends us is untrusted even when it was
// authenticated by the cluster key (a buggy or newer peer), so every decoder
// bounds lengths and counts, validates, and returns an error instead of
// panicking. All formats start with a version byte; decoders accept newer
// versions and ignore trailing bytes so that fields can be appended later.

const (
	wireVersion = 1

	maxNodeNameLen = 64        // member names (generated purge IDs embed them)
	maxNameLen     = 128       // purge IDs and origins on the wire
	maxFieldLen    = 255       // metadata strings
	maxValueLen    = 16 << 10  // purge values (URLs, prefixes, tags)
	maxStateSize   = 16 << 20  // push/pull tombstone state
	maxTombCount   = 1_000_000 // sanity bound while decoding state
)

// User message types (first byte of a memberlist user message).
const (
	msgPurge byte = 1 // a purge (gossip, direct send or resend)
	msgAck   byte = 2 // a node applied a purge that asked for acks
	msgLeave byte = 3 // a node is about to leave gracefully
)

// Purge flags on the wire.
const (
	flagHard    byte = 1 << 0
	flagWantAck byte = 1 << 1 // issuer waits for acks (PurgeWait)
	flagResend  byte = 1 << 2 // issuer resends: ack again even if already applied
)

var errMalformed = errors.New("malformed")

// nodeMeta is what a member publishes about itself in memberlist metadata.
type nodeMeta struct {
	PeerAddr, PublicAddr, Region, Version string
}

// encodeMeta encodes m as version byte + four length-prefixed strings. The
// result must fit memberlist.MetaMaxSize (512 bytes).
func encodeMeta(m nodeMeta) ([]byte, error) {
	for _, f := range []struct{ name, v string }{
		{"PeerAddr", m.PeerAddr}, {"PublicAddr", m.PublicAddr}, {"Region", m.Region}, {"Version", m.Version},
	} {
		if err := checkText(f.v, maxFieldLen); err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
	}
	if err := checkHostPort(m.PeerAddr); err != nil {
		return nil, fmt.Errorf("PeerAddr: %w", err)
	}
	b := []byte{wireVersion}
	b = appendString(b, m.PeerAddr)
	b = appendString(b, m.PublicAddr)
	b = appendString(b, m.Region)
	b = appendString(b, m.Version)
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("node metadata is %d bytes, memberlist allows %d", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

func decodeMeta(b []byte) (nodeMeta, error) {
	var m nodeMeta
	r := reader{b: b}
	if v := r.byte(); v < wireVersion {
		return m, fmt.Errorf("metadata version %d: %w", v, errMalformed)
	}
	m.PeerAddr = r.string(maxFieldLen)
	m.PublicAddr = r.string(maxFieldLen)
	m.Region = r.string(maxFieldLen)
	m.Version = r.string(maxFieldLen)
	if r.err != nil {
		return nodeMeta{}, fmt.Errorf("metadata: %w", r.err)
	}
	if err := checkHostPort(m.PeerAddr); err != nil {
		return nodeMeta{}, fmt.Errorf("metadata peer address: %w", err)
	}
	return m, nil
}

// appendPurge appends the purge body shared by messages and state.
func appendPurge(b []byte, p *Purge, flags byte) []byte {
	if p.Hard {
		flags |= flagHard
	}
	b = append(b, kindCode(p.Kind), flags)
	b = binary.AppendVarint(b, p.At.UnixNano())
	b = appendString(b, p.ID)
	b = appendString(b, p.Origin)
	return appendString(b, p.Value)
}

func readPurge(r *reader) (Purge, byte) {
	var p Purge
	p.Kind = kindName(r.byte())
	flags := r.byte()
	p.Hard = flags&flagHard != 0
	p.At = time.Unix(0, r.varint()).UTC()
	p.ID = r.string(maxNameLen)
	p.Origin = r.string(maxNameLen)
	p.Value = r.string(maxValueLen)
	if r.err == nil {
		if err := p.validate(); err != nil {
			r.err = err
		}
	}
	return p, flags
}

func encodePurgeMsg(p *Purge, flags byte) []byte {
	b := make([]byte, 0, 32+len(p.ID)+len(p.Origin)+len(p.Value))
	b = append(b, msgPurge, wireVersion)
	return appendPurge(b, p, flags)
}

func encodeAckMsg(id, from string) []byte {
	b := make([]byte, 0, 4+len(id)+len(from))
	b = append(b, msgAck, wireVersion)
	b = appendString(b, id)
	return appendString(b, from)
}

func encodeLeaveMsg(name string) []byte {
	b := make([]byte, 0, 3+len(name))
	b = append(b, msgLeave, wireVersion)
	return appendString(b, name)
}

// message is a decoded user message.
type message struct {
	typ   byte
	purge Purge
	flags byte
	ackID string
	from  string
}

func decodeMsg(b []byte) (message, error) {
	var m message
	r := reader{b: b}
	m.typ = r.byte()
	if v := r.byte(); r.err == nil && v < wireVersion {
		return m, fmt.Errorf("message version %d: %w", v, errMalformed)
	}
	switch m.typ {
	case msgPurge:
		m.purge, m.flags = readPurge(&r)
	case msgAck:
		m.ackID = r.string(maxNameLen)
		m.from = r.string(maxNameLen)
		if r.err == nil && (m.ackID == "" || m.from == "") {
			r.err = errMalformed
		}
	case msgLeave:
		m.from = r.string(maxNameLen)
		if r.err == nil && m.from == "" {
			r.err = errMalformed
		}
	default:
		if r.err == nil {
			r.err = fmt.Errorf("unknown message type %d: %w", m.typ, errMalformed)
		}
	}
	if r.err != nil {
		return message{}, r.err
	}
	return m, nil
}

// encodeState encodes tombstones for push/pull: version, count, purges.
func encodeState(ts []Tombstone) []byte {
	b := []byte{wireVersion}
	b = binary.AppendUvarint(b, uint64(len(ts)))
	for i := range ts {
		var flags byte
		if ts[i].WantAck {
			flags = flagWantAck
		}
		b = appendPurge(b, &ts[i].Purge, flags)
	}
	return b
}

type statePurge struct {
	p     Purge
	flags byte
}

func decodeState(b []byte) ([]statePurge, error) {
	if len(b) > maxStateSize {
		return nil, fmt.Errorf("state of %d bytes: %w", len(b), errMalformed)
	}
	r := reader{b: b}
	if v := r.byte(); r.err == nil && v < wireVersion {
		return nil, fmt.Errorf("state version %d: %w", v, errMalformed)
	}
	n := r.uvarint()
	// Each purge takes at least 6 bytes, which bounds n by the input size
	// and keeps a forged count from allocating gigabytes.
	if r.err == nil && (n > maxTombCount || n > uint64(len(b))/6) {
		return nil, fmt.Errorf("state count %d: %w", n, errMalformed)
	}
	out := make([]statePurge, 0, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		p, flags := readPurge(&r)
		out = append(out, statePurge{p, flags})
	}
	if r.err != nil {
		return nil, fmt.Errorf("state: %w", r.err)
	}
	return out, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// reader decodes sequentially and remembers the first error, so decoders
// read straight down and check once.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail() {
	if r.err == nil {
		r.err = errMalformed
	}
	r.b = nil
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) < 1 {
		r.fail()
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if r.err != nil || n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if r.err != nil || n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) string(max int) string {
	n := r.uvarint()
	if r.err != nil || n > uint64(max) || n > uint64(len(r.b)) {
		r.fail()
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	if checkText(s, max) != nil {
		r.fail()
		return ""
	}
	return s
}

// checkText accepts valid UTF-8 without control characters: these strings end
// up in logs, admin JSON and HTTP headers.
func checkText(s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("longer than %d bytes", max)
	}
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return errors.New("contains control characters")
		}
	}
	return nil
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("%q has a bad port", s)
	}
	return nil
}

func kindCode(k string) byte {
	switch k {
	case KindURL:
		return 1
	case KindPrefix:
		return 2
	case KindTag:
		return 3
	}
	return 0
}

func kindName(b byte) string {
	switch b {
	case 1:
		return KindURL
	case 2:
		return KindPrefix
	case 3:
		return KindTag
	}
	return ""
}
