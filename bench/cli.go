package bench

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Exit statuses of RunCLI and ProbeCLI.
const (
	ExitOK       = 0 // ran, and the SLO (if any) held / every target is up
	ExitViolated = 1 // the SLO was violated, a target is down, or the run failed
	ExitUsage    = 2 // bad flags or configuration
)

const benchUsage = `usage: edgeshield bench <steady|rush|capacity|crowd|compare> [flags]

  steady    --rate R --duration D          constant arrival rate (open loop)
            --max-throughput --workers N   closed loop instead: N connections back to back
  rush      --from A --to B --duration D   rate ramps linearly from A to B req/s
  capacity  --slo S [--from A] [--to MAX] [--duration STEP]
                                           highest steady rate at which the SLO holds
  crowd     --clients N                    N concurrent clients ask each URL at once
                                           (cold-cache flash crowd; see --origin-counts)
  compare   [--json F] [--html F] [--median] A.json B.json …
                                           one comparison table from saved JSON reports
                                           (--median: same-name runs are repeats, keep the median)

Targets: --url U (repeatable, round robin) | --urls-file F ("URL [weight]" lines)
         | --zipf N --base URL [--zipf-s 1.0] (N objects, "%d" in URL = rank)
Exit status: 0 ok, 1 SLO violated or run failed, 2 usage error.
Run "edgeshield bench <scenario> -h" for every flag.
`

// RunCLI implements `edgeshield bench <steady|rush|capacity|crowd|compare>
// [flags]` and returns the exit status (ExitOK, ExitViolated, ExitUsage).
// Text goes to stdout, diagnostics to stderr; a live progress line is drawn
// only when stdout is a terminal and --quiet is not given.
func RunCLI(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		io.WriteString(stderr, benchUsage) //nolint:errcheck // best effort usage text
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	cmd, args := args[0], args[1:]
	if cmd == "compare" {
		return compareCLI(args, stdout, stderr)
	}
	o, code := parseRunFlags(cmd, args, stderr)
	if o == nil {
		return code
	}
	return o.run(ctx, stdout, stderr)
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// runOpts are the parsed flags of a load subcommand.
type runOpts struct {
	cmd                    string
	urls, headers          stringList
	urlsFile, base         string
	zipfN                  int
	zipfS                  float64
	rate, from, to         float64
	duration, timeout      time.Duration
	keepalive, insecure    bool
	cacert                 string
	jsonOut, htmlOut, name string
	quiet, maxThroughput   bool
	workers, clients       int
	sloText, originCounts  string
	seed                   uint64

	slo *SLO
	cfg Config
}

func parseRunFlags(cmd string, args []string, stderr io.Writer) (*runOpts, int) {
	o := &runOpts{cmd: cmd}
	fs := flag.NewFlagSet("edgeshield bench "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Var(&o.urls, "url", "target URL (repeatable: requests go round robin)")
	fs.StringVar(&o.urlsFile, "urls-file", "", `file of "URL [weight]" lines`)
	fs.IntVar(&o.zipfN, "zipf", 0, "request N synthetic objects with Zipf popularity (needs --base)")
	fs.Float64Var(&o.zipfS, "zipf-s", 1.0, "Zipf exponent (1 = typical web popularity, 0 = uniform)")
	fs.StringVar(&o.base, "base", "", `Zipf object URL; "%d" is replaced by the rank, else the rank is appended`)
	fs.DurationVar(&o.timeout, "timeout", DefaultTimeout, "per-request timeout")
	fs.BoolVar(&o.keepalive, "keepalive", true, "reuse connections (--keepalive=false: one connection per request)")
	fs.Var(&o.headers, "header", `extra request header "Name: value" (repeatable; Host too)`)
	fs.BoolVar(&o.insecure, "insecure", false, "https: do not verify the server certificate")
	fs.StringVar(&o.cacert, "cacert", "", "https: PEM file of CA certificates to trust")
	fs.StringVar(&o.jsonOut, "json", "", "write the JSON report to FILE")
	fs.StringVar(&o.htmlOut, "html", "", "write the HTML report with charts to FILE")
	fs.StringVar(&o.name, "name", "", "label of the run in reports (default: the scenario)")
	fs.BoolVar(&o.quiet, "quiet", false, "print only the SLO verdict (and errors)")
	fs.IntVar(&o.workers, "workers", 0, "max requests in flight (0: rate × timeout); closed loop: connections (default 64)")
	fs.StringVar(&o.sloText, "slo", "", `SLO, e.g. "p95<250ms,p99<500ms,errors=0"; exit status 1 when violated`)
	fs.StringVar(&o.originCounts, "origin-counts", "", "URL of the demo origin's /__origin/counts: report origin requests made during the run")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed for weighted and Zipf picks")
	switch cmd {
	case "steady":
		fs.Float64Var(&o.rate, "rate", 0, "offered rate, req/s (required unless --max-throughput)")
		fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of the run")
		fs.BoolVar(&o.maxThroughput, "max-throughput", false, "closed loop: --workers connections send back to back (throughput only; hides stalls)")
	case "rush":
		fs.Float64Var(&o.from, "from", 0, "offered rate at the start, req/s")
		fs.Float64Var(&o.to, "to", 0, "offered rate at the end, req/s (required)")
		fs.DurationVar(&o.duration, "duration", 60*time.Second, "length of the ramp")
	case "capacity":
		fs.Float64Var(&o.from, "from", 50, "first rate tried, req/s")
		fs.Float64Var(&o.to, "to", 1e6, "highest rate tried, req/s")
		fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each step")
	case "crowd":
		fs.IntVar(&o.clients, "clients", 100, "concurrent clients per URL")
	default:
		fmt.Fprintf(stderr, "edgeshield bench: unknown scenario %q\n\n", cmd)
		io.WriteString(stderr, benchUsage) //nolint:errcheck // best effort usage text
		return nil, ExitUsage
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, ExitOK
		}
		return nil, ExitUsage
	}
	if fs.NArg() > 0 {
		return usageErr(stderr, cmd, fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if err := o.validate(); err != nil {
		return usageErr(stderr, cmd, err)
	}
	return o, ExitOK
}

func usageErr(stderr io.Writer, cmd string, err error) (*runOpts, int) {
	fmt.Fprintf(stderr, "edgeshield bench %s: %v\n", cmd, err)
	return nil, ExitUsage
}

// validate checks flag combinations and builds the Config.
func (o *runOpts) validate() error {
	switch o.cmd {
	case "steady":
		if o.maxThroughput {
			if o.workers == 0 {
				o.workers = DefaultConnections
			}
		} else if !(o.rate > 0) {
			return errors.New("--rate must be a positive number of req/s")
		}
	case "rush":
		if !(o.to > 0) || o.from < 0 {
			return errors.New("--to must be positive and --from not negative")
		}
	case "capacity":
		if o.sloText == "" {
			return errors.New("--slo is required: capacity is the highest rate at which it holds")
		}
	case "crowd":
		if o.clients < 1 || o.clients > DefaultMaxInFlight {
			return fmt.Errorf("--clients %d must be in [1, %d]", o.clients, DefaultMaxInFlight)
		}
	}
	if o.duration < 0 || o.timeout <= 0 || o.workers < 0 {
		return errors.New("--duration, --timeout and --workers must not be negative (--timeout positive)")
	}
	if o.sloText != "" {
		slo, err := ParseSLO(o.sloText)
		if err != nil {
			return err
		}
		o.slo = &slo
	}
	tg, err := o.targets()
	if err != nil {
		return err
	}
	hdr := http.Header{}
	for _, h := range o.headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(name) == "" || strings.ContainsAny(name, " \t") {
			return fmt.Errorf("--header %q: want \"Name: value\"", h)
		}
		hdr.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	tlsCfg, err := o.tlsConfig()
	if err != nil {
		return err
	}
	o.cfg = Config{Targets: tg, Header: hdr, Timeout: o.timeout, DisableKeepAlive: !o.keepalive,
		TLS: tlsCfg, MaxInFlight: o.workers, Seed: o.seed}
	return nil
}

func (o *runOpts) targets() (Targets, error) {
	n := 0
	for _, set := range []bool{len(o.urls) > 0, o.urlsFile != "", o.zipfN > 0} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, errors.New("give exactly one of --url, --urls-file, --zipf N --base URL")
	}
	switch {
	case o.urlsFile != "":
		f, err := os.Open(o.urlsFile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		list, err := ParseURLList(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o.urlsFile, err)
		}
		return Weighted(list)
	case o.zipfN > 0:
		if o.base == "" {
			return nil, errors.New("--zipf needs --base URL")
		}
		return Zipf(o.base, o.zipfN, o.zipfS)
	}
	return RoundRobin(o.urls...)
}

func (o *runOpts) tlsConfig() (*tls.Config, error) {
	// fasthttp speaks HTTP/1.1 only: never offer h2 in ALPN.
	c := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}, InsecureSkipVerify: o.insecure} //nolint:gosec // opt-in flag
	if o.cacert != "" {
		pem, err := os.ReadFile(o.cacert)
		if err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert %s: no PEM certificate found", o.cacert)
		}
		c.RootCAs = pool
	}
	return c, nil
}

// isTerminal reports whether w is a character device (a TTY).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (o *runOpts) run(ctx context.Context, stdout, stderr io.Writer) int {
	live := !o.quiet && isTerminal(stdout)
	if live {
		o.cfg.Progress = func(p Progress) {
			fmt.Fprintf(stdout, "\r\033[K%6.1fs  offered %8.1f/s  achieved %8.1f/s  p99 %-8s errors %d",
				p.Elapsed.Seconds(), p.OfferedRate, p.AchievedRate, fmtDur(p.P99), p.Errors)
		}
	}
	sc := o.scenario() // before New: a crowd sizes MaxInFlight
	r, err := New(o.cfg)
	if err != nil {
		return fail(stderr, o.cmd, err, ExitUsage)
	}
	rep := &Report{Title: "edgeshield bench " + o.cmd, Generated: time.Now()}
	before, err := o.readOriginCounts(ctx)
	if err != nil {
		return fail(stderr, o.cmd, err, ExitViolated)
	}
	var runErr error
	var verdict *Verdict
	if o.cmd == "capacity" {
		cc := CapacityConfig{SLO: *o.slo, Start: o.from, Max: o.to, StepDuration: o.duration}
		if !o.quiet {
			cc.OnStep = func(s *Result) {
				if live {
					fmt.Fprint(stdout, "\r\033[K")
				}
				fmt.Fprintf(stdout, "step %.0f/s: p50 %s p99 %s errors %d: %s\n", s.Scenario.From,
					fmtDur(s.Latency.P50), fmtDur(s.Latency.P99), s.Errors, s.Verdict)
			}
		}
		var cr *CapacityResult
		cr, runErr = r.Capacity(ctx, cc)
		if cr != nil {
			rep.Capacity = cr
			rep.Results = cr.Steps
			v := Verdict{Held: cr.Rate > 0, Clauses: nil}
			verdict = &v
		}
	} else {
		var res *Result
		res, runErr = r.Run(ctx, sc)
		if res != nil {
			if o.slo != nil {
				v := o.slo.Evaluate(res)
				res.Verdict, verdict = &v, &v
			}
			rep.Results = []*Result{res}
		}
	}
	if live {
		fmt.Fprint(stdout, "\r\033[K")
	}
	if runErr != nil && len(rep.Results) == 0 {
		return fail(stderr, o.cmd, runErr, ExitViolated)
	}
	if o.originCounts != "" && len(rep.Results) > 0 {
		after, err := o.readOriginCounts(context.WithoutCancel(ctx))
		if err != nil {
			fmt.Fprintf(stderr, "edgeshield bench %s: %v\n", o.cmd, err)
		} else {
			rep.Results[len(rep.Results)-1].OriginRequests = countsDelta(before, after)
		}
	}
	if err := o.print(stdout, rep, verdict); err != nil {
		return fail(stderr, o.cmd, err, ExitViolated)
	}
	if err := writeReports(rep, o.jsonOut, o.htmlOut); err != nil {
		return fail(stderr, o.cmd, err, ExitViolated)
	}
	switch {
	case runErr != nil:
		fmt.Fprintf(stderr, "edgeshield bench %s: interrupted: %v (partial results above)\n", o.cmd, runErr)
		return ExitViolated
	case verdict != nil && !verdict.Held:
		return ExitViolated
	}
	return ExitOK
}

func (o *runOpts) scenario() Scenario {
	var sc Scenario
	switch {
	case o.cmd == "rush":
		sc = Rush(o.from, o.to, o.duration)
	case o.cmd == "crowd":
		sc = FlashCrowd(o.clients * o.targetCount())
	case o.maxThroughput:
		sc = MaxThroughput(o.workers, o.duration)
	default:
		sc = Steady(o.rate, o.duration)
	}
	if o.cmd == "crowd" && o.cfg.MaxInFlight == 0 {
		// Every client of the crowd is in flight at once, however many.
		o.cfg.MaxInFlight = o.clients * o.targetCount()
	}
	if o.name != "" {
		sc.Name = o.name
	}
	return sc
}

func (o *runOpts) targetCount() int {
	if len(o.urls) > 0 {
		return len(o.urls)
	}
	return 1
}

func (o *runOpts) print(w io.Writer, rep *Report, verdict *Verdict) error {
	if o.quiet {
		if verdict != nil && rep.Capacity == nil {
			_, err := fmt.Fprintln(w, verdict)
			return err
		}
		if rep.Capacity != nil {
			_, err := fmt.Fprintf(w, "capacity %.0f req/s with %s\n", rep.Capacity.Rate, rep.Capacity.SLO)
			return err
		}
		return nil
	}
	if rep.Capacity != nil {
		return WriteCapacityText(w, rep.Capacity)
	}
	for _, r := range rep.Results {
		if err := WriteText(w, r); err != nil {
			return err
		}
	}
	return nil
}

func fail(stderr io.Writer, cmd string, err error, code int) int {
	fmt.Fprintf(stderr, "edgeshield bench %s: %v\n", cmd, err)
	return code
}

// writeReports writes the JSON and HTML reports when their paths are set,
// creating parent directories.
func writeReports(rep *Report, jsonPath, htmlPath string) error {
	if err := writeFile(jsonPath, rep.WriteJSON); err != nil {
		return err
	}
	return writeFile(htmlPath, func(w io.Writer) error { return WriteHTML(w, rep) })
}

// writeFile creates path (and its parent directories) with fn's output;
// an empty path writes nothing.
func writeFile(path string, fn func(io.Writer) error) error {
	if path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := fn(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readOriginCounts fetches the demo origin's per-path request counters
// ({"paths": {"/a": n, …}}), or nil when --origin-counts is unset.
func (o *runOpts) readOriginCounts(ctx context.Context) (map[string]int64, error) {
	if o.originCounts == "" {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.originCounts, nil)
	if err != nil {
		return nil, fmt.Errorf("--origin-counts: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("--origin-counts: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("--origin-counts: %s answered %s", o.originCounts, resp.Status)
	}
	var doc struct {
		Paths map[string]int64 `json:"paths"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&doc); err != nil {
		return nil, fmt.Errorf("--origin-counts: decoding %s: %w", o.originCounts, err)
	}
	if doc.Paths == nil {
		doc.Paths = map[string]int64{}
	}
	return doc.Paths, nil
}

// countsDelta returns the counters that grew between before and after.
func countsDelta(before, after map[string]int64) map[string]int64 {
	d := map[string]int64{}
	for p, n := range after {
		if n > before[p] {
			d[p] = n - before[p]
		}
	}
	return d
}

// compareCLI merges saved JSON reports into one table and report.
func compareCLI(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("edgeshield bench compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jsonOut := fs.String("json", "", "write the merged JSON report to FILE")
	htmlOut := fs.String("html", "", "write the merged HTML report to FILE")
	title := fs.String("title", "Edgeshield comparison", "report title")
	median := fs.Bool("median", false, "runs with the same name are repeats: keep the median one of each")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "edgeshield bench compare: give one or more JSON reports")
		return ExitUsage
	}
	merged := &Report{Title: *title, Generated: time.Now()}
	for _, path := range fs.Args() {
		f, err := os.Open(path)
		if err != nil {
			return fail(stderr, "compare", err, ExitUsage)
		}
		rep, err := ReadReport(f)
		f.Close()
		if err != nil {
			return fail(stderr, "compare", fmt.Errorf("%s: %w", path, err), ExitUsage)
		}
		merged.Results = append(merged.Results, rep.Results...)
	}
	if *median {
		merged.Results = MedianRuns(merged.Results)
	}
	if err := WriteTable(stdout, merged.Results); err != nil {
		return fail(stderr, "compare", err, ExitViolated)
	}
	if err := writeReports(merged, *jsonOut, *htmlOut); err != nil {
		return fail(stderr, "compare", err, ExitViolated)
	}
	return ExitOK
}

// MedianRuns treats results with the same name as repeats of one run and
// keeps the median of each, in order of first appearance: by achieved rate
// for closed-loop runs (their point is throughput), by p99 latency for open
// loop ones (their rate is fixed; latency is the point). Repeats on a noisy
// machine thus neither flatter nor punish a system with one lucky or
// unlucky run.
func MedianRuns(rs []*Result) []*Result {
	groups := map[string][]*Result{}
	var order []string
	for _, r := range rs {
		if groups[r.Name] == nil {
			order = append(order, r.Name)
		}
		groups[r.Name] = append(groups[r.Name], r)
	}
	out := make([]*Result, 0, len(order))
	for _, name := range order {
		g := slices.Clone(groups[name])
		slices.SortStableFunc(g, func(a, b *Result) int {
			if a.Scenario.Connections > 0 {
				return cmp.Compare(b.AchievedRate, a.AchievedRate) // best first
			}
			return cmp.Compare(a.Latency.P99, b.Latency.P99) // best first
		})
		// With an even count, the better of the two middle runs.
		out = append(out, g[(len(g)-1)/2])
	}
	return out
}
