package cache

// ParseTargeted parses a targeted cache-control field (CDN-Cache-Control or
// another, RFC 9213) into d, which it resets first. value is the field's
// lines joined with ", " (RFC 8941 §4.2).
//
// Targeted fields are Structured Fields Dictionaries (RFC 9213 §2.1, RFC
// 8941 §3.2), parsed strictly, unlike Cache-Control: a later member replaces
// an earlier one of the same key; parameters are ignored. The directives of
// RFC 9111 must have their type: delta-seconds directives (max-age,
// s-maxage, stale-while-revalidate, stale-if-error) a non-negative Integer,
// flag directives a Boolean, private and no-cache a Boolean or a String
// (the qualified form). ok is false, and d must not be used, when the field
// does not parse or a directive has the wrong type: RFC 9213 §2.1 then has
// the cache ignore the whole field, as if absent, and fall back to
// Cache-Control. It never allocates (qualified private fields point into
// value).
func ParseTargeted(d *Directives, value []byte) (ok bool) {
	d.Reset()
	p := sfParser{v: value}
	p.skipSP()
	if p.eof() {
		return false // empty: ignored (RFC 9213 §2.1)
	}
	for {
		key, ok := p.key()
		if !ok {
			return false
		}
		v := sfValue{kind: sfBool, boolean: true}
		if p.peek() == '=' {
			p.next()
			if v, ok = p.bareItem(); !ok {
				return false
			}
		}
		if !p.params() || !d.applyTargeted(key, v) {
			return false
		}
		p.skipOWS()
		if p.eof() {
			return true
		}
		if p.peek() != ',' {
			return false
		}
		p.next()
		p.skipOWS()
		if p.eof() {
			return false // trailing comma
		}
	}
}

type sfKind uint8

const (
	sfBool sfKind = iota
	sfInteger
	sfDecimal
	sfString
	sfToken
	sfBytes
	sfInnerList
)

type sfValue struct {
	kind    sfKind
	boolean bool
	integer int64
	str     []byte // String content (escapes left in place)
}

// applyTargeted records one dictionary member; false when a known directive
// has the wrong type.
func (d *Directives) applyTargeted(key []byte, v sfValue) bool {
	delta := func(dst *int64) bool {
		if v.kind != sfInteger || v.integer < 0 {
			return false
		}
		*dst = min(v.integer, maxDeltaSeconds)
		return true
	}
	flag := func(dst *bool) bool {
		if v.kind != sfBool {
			return false
		}
		*dst = v.boolean
		return true
	}
	switch string(key) { // no allocation: the conversion is only compared
	case "max-age":
		return delta(&d.MaxAge)
	case "s-maxage":
		return delta(&d.SMaxAge)
	case "stale-while-revalidate":
		return delta(&d.StaleWhileRevalidate)
	case "stale-if-error":
		return delta(&d.StaleIfError)
	case "no-store":
		return flag(&d.NoStore)
	case "public":
		return flag(&d.Public)
	case "must-revalidate":
		return flag(&d.MustRevalidate)
	case "proxy-revalidate":
		return flag(&d.ProxyRevalidate)
	case "no-transform":
		return flag(&d.NoTransform)
	case "immutable":
		return flag(&d.Immutable)
	case "must-understand":
		return flag(&d.MustUnderstand)
	case "no-cache":
		if v.kind == sfString {
			d.NoCache = true // qualified: treated as unqualified, as in Cache-Control
			return true
		}
		return flag(&d.NoCache)
	case "private":
		switch v.kind {
		case sfString:
			d.PrivateFields = nil // a later member replaces an earlier one
			d.Private = false
			d.setPrivate(v.str, true)
			return true
		case sfBool:
			d.Private, d.PrivateFields = v.boolean, nil
			return true
		}
		return false
	}
	return true // unknown directives are ignored (RFC 9111 §5.2.3)
}

// sfParser reads one field value.
type sfParser struct {
	v   []byte
	pos int
}

func (p *sfParser) eof() bool { return p.pos >= len(p.v) }

func (p *sfParser) peek() byte {
	if p.eof() {
		return 0
	}
	return p.v[p.pos]
}

func (p *sfParser) next() { p.pos++ }

func (p *sfParser) skipSP() {
	for !p.eof() && p.peek() == ' ' {
		p.next()
	}
}

func (p *sfParser) skipOWS() {
	for !p.eof() && (p.peek() == ' ' || p.peek() == '\t') {
		p.next()
	}
}

func isLCAlpha(c byte) bool { return 'a' <= c && c <= 'z' }
func isDigit(c byte) bool   { return '0' <= c && c <= '9' }
func isAlpha(c byte) bool   { return isLCAlpha(c) || ('A' <= c && c <= 'Z') }

// key parses an sf key: ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" ).
func (p *sfParser) key() ([]byte, bool) {
	if p.eof() {
		return nil, false
	}
	if c := p.peek(); !isLCAlpha(c) && c != '*' {
		return nil, false
	}
	start := p.pos
	for !p.eof() {
		c := p.peek()
		if !(isLCAlpha(c) || isDigit(c) || c == '_' || c == '-' || c == '.' || c == '*') {
			break
		}
		p.next()
	}
	return p.v[start:p.pos], true
}

// params parses and discards parameters (RFC 8941 §4.2.3.2).
func (p *sfParser) params() bool {
	for !p.eof() && p.peek() == ';' {
		p.next()
		p.skipSP()
		if _, ok := p.key(); !ok {
			return false
		}
		if !p.eof() && p.peek() == '=' {
			p.next()
			v, ok := p.bareItem()
			if !ok || v.kind == sfInnerList {
				return false
			}
		}
	}
	return true
}

// bareItem parses a bare item, or an inner list (reported as sfInnerList),
// after a key's "=".
func (p *sfParser) bareItem() (sfValue, bool) {
	if p.eof() {
		return sfValue{}, false
	}
	c := p.peek()
	switch {
	case c == '(':
		return p.innerList()
	case c == '-' || isDigit(c):
		return p.number()
	case c == '"':
		return p.str()
	case c == '*' || isAlpha(c):
		return p.token()
	case c == ':':
		return p.byteSeq()
	case c == '?':
		p.next()
		switch p.peek() {
		case '0':
			p.next()
			return sfValue{kind: sfBool}, true
		case '1':
			p.next()
			return sfValue{kind: sfBool, boolean: true}, true
		}
	}
	return sfValue{}, false
}

func (p *sfParser) innerList() (sfValue, bool) {
	p.next() // "("
	for !p.eof() {
		p.skipSP()
		if p.peek() == ')' {
			p.next()
			return sfValue{kind: sfInnerList}, p.params()
		}
		v, ok := p.bareItem()
		if !ok || v.kind == sfInnerList || !p.params() {
			return sfValue{}, false
		}
		if c := p.peek(); c != ' ' && c != ')' {
			return sfValue{}, false
		}
	}
	return sfValue{}, false
}

// number parses an Integer (at most 15 digits) or a Decimal (RFC 8941 §4.2.4).
func (p *sfParser) number() (sfValue, bool) {
	neg := false
	if p.peek() == '-' {
		neg = true
		p.next()
	}
	var n int64
	digits, frac, dot := 0, 0, false
	for !p.eof() {
		c := p.peek()
		switch {
		case isDigit(c):
			if dot {
				frac++
			} else {
				digits++
				n = n*10 + int64(c-'0')
			}
		case c == '.' && !dot:
			if digits > 12 {
				return sfValue{}, false
			}
			dot = true
		default:
			goto done
		}
		p.next()
	}
done:
	switch {
	case digits == 0:
		return sfValue{}, false
	case dot:
		if frac == 0 || frac > 3 {
			return sfValue{}, false
		}
		return sfValue{kind: sfDecimal}, true
	case digits > 15:
		return sfValue{}, false
	}
	if neg {
		n = -n
	}
	return sfValue{kind: sfInteger, integer: n}, true
}

// str parses a String: printable ASCII, with \" and \\ escapes only.
func (p *sfParser) str() (sfValue, bool) {
	p.next() // opening quote
	start := p.pos
	for !p.eof() {
		c := p.peek()
		switch {
		case c == '\\':
			p.next()
			if p.eof() || (p.peek() != '"' && p.peek() != '\\') {
				return sfValue{}, false
			}
		case c == '"':
			s := p.v[start:p.pos]
			p.next()
			return sfValue{kind: sfString, str: s}, true
		case c < 0x20 || c > 0x7e:
			return sfValue{}, false
		}
		p.next()
	}
	return sfValue{}, false // unterminated
}

// token parses a Token: ( ALPHA / "*" ) *( tchar / ":" / "/" ).
func (p *sfParser) token() (sfValue, bool) {
	for !p.eof() {
		if c := p.peek(); !isTchar(c) && c != ':' && c != '/' {
			break
		}
		p.next()
	}
	return sfValue{kind: sfToken}, true
}

// byteSeq parses a Byte Sequence: ":" *base64 ":".
func (p *sfParser) byteSeq() (sfValue, bool) {
	p.next()
	for !p.eof() {
		c := p.peek()
		p.next()
		if c == ':' {
			return sfValue{kind: sfBytes}, true
		}
		if !isAlpha(c) && !isDigit(c) && c != '+' && c != '/' && c != '=' {
			return sfValue{}, false
		}
	}
	return sfValue{}, false
}
