package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// ErrBadTarget is wrapped by every error about target URLs and URL lists.
var ErrBadTarget = errors.New("bad target")

// Targets chooses the URL of each request.
//
// Pick gets the request's sequence number (0, 1, 2, … within a run) and a
// random source owned by the caller; implementations are immutable after
// construction, so Pick is safe for concurrent use with distinct sources.
type Targets interface {
	Pick(seq uint64, rnd *rand.Rand) string
}

// checkURL accepts absolute http and https URLs with a host.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: %q: %w", ErrBadTarget, raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: %q: want an absolute http:// or https:// URL", ErrBadTarget, raw)
	}
	return nil
}

type roundRobin []string

// RoundRobin cycles through urls in order, e.g. one URL per edge node.
func RoundRobin(urls ...string) (Targets, error) {
	if len(urls) == 0 {
		return nil, fmt.Errorf("%w: no URL", ErrBadTarget)
	}
	for _, u := range urls {
		if err := checkURL(u); err != nil {
			return nil, err
		}
	}
	return roundRobin(append([]string(nil), urls...)), nil
}

func (r roundRobin) Pick(seq uint64, _ *rand.Rand) string { return r[seq%uint64(len(r))] }

// WeightedURL is one line of a URL list.
type WeightedURL struct {
	URL    string
	Weight float64 // relative share of requests, > 0
}

type weighted struct {
	urls []string
	cum  []float64 // cumulative weights, last = total
}

// Weighted picks each URL with probability proportional to its weight.
func Weighted(list []WeightedURL) (Targets, error) {
	if len(list) == 0 {
		return nil, fmt.Errorf("%w: empty URL list", ErrBadTarget)
	}
	w := &weighted{}
	total := 0.0
	for _, e := range list {
		if err := checkURL(e.URL); err != nil {
			return nil, err
		}
		if !(e.Weight > 0) || math.IsInf(e.Weight, 0) {
			return nil, fmt.Errorf("%w: %q: weight %v must be a positive number", ErrBadTarget, e.URL, e.Weight)
		}
		total += e.Weight
		if math.IsInf(total, 0) {
			return nil, fmt.Errorf("%w: weights overflow", ErrBadTarget)
		}
		w.urls = append(w.urls, e.URL)
		w.cum = append(w.cum, total)
	}
	return w, nil
}

func (w *weighted) Pick(_ uint64, rnd *rand.Rand) string {
	x := rnd.Float64() * w.cum[len(w.cum)-1]
	i := sort.SearchFloat64s(w.cum, x)
	if i >= len(w.urls) { // x == total after rounding
		i = len(w.urls) - 1
	}
	return w.urls[i]
}

// ParseURLList reads a URL list: one "URL [weight]" per line, weight 1 when
// omitted; blank lines and lines starting with '#' are ignored. Errors name
// the line.
func ParseURLList(r io.Reader) ([]WeightedURL, error) {
	var list []WeightedURL
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for line := 1; sc.Scan(); line++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		e := WeightedURL{URL: f[0], Weight: 1}
		switch len(f) {
		case 1:
		case 2:
			w, err := strconv.ParseFloat(f[1], 64)
			if err != nil || !(w > 0) || math.IsInf(w, 0) {
				return nil, fmt.Errorf("%w: line %d: weight %q must be a positive number", ErrBadTarget, line, f[1])
			}
			e.Weight = w
		default:
			return nil, fmt.Errorf("%w: line %d: want \"URL [weight]\", got %d fields", ErrBadTarget, line, len(f))
		}
		if err := checkURL(e.URL); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		list = append(list, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: reading URL list: %w", ErrBadTarget, err)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("%w: URL list has no URL", ErrBadTarget)
	}
	return list, nil
}

// MaxZipfObjects bounds the object count of Zipf targets (the CDF costs 8
// bytes per object).
const MaxZipfObjects = 10_000_000

type zipf struct {
	prefix, suffix string
	cdf            []float64 // cdf[k] = P(rank <= k+1)
}

// Zipf requests n synthetic objects whose popularity follows Zipf's law with
// exponent s (the object of rank k is requested with probability
// proportional to 1/k^s; s = 1 is typical of web caches, s = 0 is uniform).
// The URL of rank k is base with "%d" replaced by k, or base followed by k
// when base has no "%d", e.g. "http://edge/dyn/obj-%d?size=4096".
func Zipf(base string, n int, s float64) (Targets, error) {
	if n < 1 || n > MaxZipfObjects {
		return nil, fmt.Errorf("%w: zipf object count %d must be in [1, %d]", ErrBadTarget, n, MaxZipfObjects)
	}
	if s < 0 || math.IsNaN(s) || math.IsInf(s, 0) {
		return nil, fmt.Errorf("%w: zipf exponent %v must be >= 0", ErrBadTarget, s)
	}
	z := &zipf{prefix: base}
	if i := strings.Index(base, "%d"); i >= 0 {
		z.prefix, z.suffix = base[:i], base[i+2:]
	}
	if err := checkURL(z.prefix + "1" + z.suffix); err != nil {
		return nil, err
	}
	z.cdf = make([]float64, n)
	total := 0.0
	for k := 1; k <= n; k++ {
		total += math.Pow(float64(k), -s)
		z.cdf[k-1] = total
	}
	for i := range z.cdf {
		z.cdf[i] /= total
	}
	return z, nil
}

func (z *zipf) Pick(_ uint64, rnd *rand.Rand) string {
	k := sort.SearchFloat64s(z.cdf, rnd.Float64()) + 1
	if k > len(z.cdf) {
		k = len(z.cdf)
	}
	return z.prefix + strconv.Itoa(k) + z.suffix
}
