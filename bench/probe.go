package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"
)

// ProbeConfig configures a Prober. The zero value of every field but
// Targets is a usable default.
type ProbeConfig struct {
	// Targets are the URLs checked each round: health endpoints of edges
	// (/readyz) and/or content URLs. Required.
	Targets []string

	// Interval between rounds of Run. Default 60 s.
	Interval time.Duration

	// Timeout bounds one check (connect to end of body) and one webhook
	// delivery. Default 10 s.
	Timeout time.Duration

	// Webhook, when set, receives a POST with a JSON ProbeEvent on every
	// state change of a target (up → down, down → up, and a first check that
	// finds it down). Delivery is synchronous at the end of a round, so a
	// slow webhook delays the next round by at most Timeout; failures are
	// logged and counted in the report, not retried.
	Webhook string

	// TLS configures https targets. Nil verifies against the system roots.
	TLS *tls.Config

	// Token, when set, is sent as "Authorization: Bearer <Token>" with every
	// check (never to the webhook): the admin listener's /readyz and
	// /healthz answer 401 without it when admin.token is set. Default "".
	Token string

	// Now is the clock. Default time.Now; tests inject a fake one.
	Now func() time.Time

	// OnEvent, when set, is called with every state change. It must not block.
	OnEvent func(ProbeEvent)

	// Logger receives webhook failures. Default slog.Default().
	Logger *slog.Logger

	// MaxSamples bounds the response times kept per target for the
	// percentiles (the oldest are dropped). Default 100 000, a couple of
	// months at one check a minute.
	MaxSamples int
}

// ProbeCheck is the record of one check.
type ProbeCheck struct {
	Target  string        `json:"target"`
	At      time.Time     `json:"at"`
	Up      bool          `json:"up"`
	Status  int           `json:"status,omitempty"`
	Latency time.Duration `json:"latency_ns"`
	Reason  string        `json:"reason,omitempty"` // why it is down
}

// Incident is a period during which a target was down: from the first
// failing check to the first succeeding check after it.
type Incident struct {
	Target   string        `json:"target"`
	Start    time.Time     `json:"start"`
	End      time.Time     `json:"end,omitzero"` // zero while open
	Duration time.Duration `json:"duration_ns"`  // to End, or to the last check while open
	Open     bool          `json:"open"`
	Reason   string        `json:"reason"` // of the first failing check
}

// ProbeEvent is the JSON body of a webhook.
type ProbeEvent struct {
	Target   string     `json:"target"`
	State    string     `json:"state"`    // "up" or "down"
	Previous string     `json:"previous"` // "up", "down" or "unknown"
	At       time.Time  `json:"at"`
	Check    ProbeCheck `json:"check"`
	Incident Incident   `json:"incident"` // the incident that opened or closed
}

// TargetReport summarises one target. Response times cover successful
// checks, like hosted uptime monitors.
type TargetReport struct {
	Target      string        `json:"target"`
	State       string        `json:"state"` // "up", "down" or "unknown"
	Checks      int           `json:"checks"`
	Up          int           `json:"up"`
	Uptime      float64       `json:"uptime_percent"`
	Avg         time.Duration `json:"avg_ns"`
	P95         time.Duration `json:"p95_ns"`
	Max         time.Duration `json:"max_ns"`
	Incidents   []Incident    `json:"incidents"`
	Downtime    time.Duration `json:"downtime_ns"`
	LastCheck   *ProbeCheck   `json:"last_check,omitempty"`
	WebhookErrs int           `json:"webhook_errors"`
}

// Prober checks targets and keeps uptime statistics. Check, Run and Report
// may be called from different goroutines.
type Prober struct {
	cfg    ProbeConfig
	client *http.Client

	mu      sync.Mutex // guards targets
	targets map[string]*probeState
}

type probeState struct {
	state     string // "unknown", "up", "down"
	checks    int
	up        int
	samples   []time.Duration // latencies of successful checks, bounded
	sum       time.Duration   // of all successful checks
	max       time.Duration
	incidents []Incident // the last may be open
	last      *ProbeCheck
	hookErrs  int
}

// ErrNoTargets is returned by NewProber without targets.
var ErrNoTargets = errors.New("probe: no targets")

// NewProber validates cfg and fills its defaults.
func NewProber(cfg ProbeConfig) (*Prober, error) {
	if len(cfg.Targets) == 0 {
		return nil, ErrNoTargets
	}
	for _, t := range cfg.Targets {
		if err := checkURL(t); err != nil {
			return nil, fmt.Errorf("probe: %w", err)
		}
	}
	if cfg.Webhook != "" {
		if err := checkURL(cfg.Webhook); err != nil {
			return nil, fmt.Errorf("probe webhook: %w", err)
		}
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Interval < 0 || cfg.Timeout < 0 || cfg.MaxSamples < 0 {
		return nil, fmt.Errorf("%w: probe interval, timeout and max samples must be positive", ErrBadConfig)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxSamples == 0 {
		cfg.MaxSamples = 100_000
	}
	cfg.Targets = slices.Clone(cfg.Targets)
	p := &Prober{cfg: cfg, targets: map[string]*probeState{}}
	for _, t := range cfg.Targets {
		p.targets[t] = &probeState{state: "unknown"}
	}
	tr := &http.Transport{
		TLSClientConfig:   cfg.TLS,
		DisableKeepAlives: true, // every check measures a fresh connection, as a visitor's first request would
		ForceAttemptHTTP2: false,
	}
	p.client = &http.Client{
		Transport: tr,
		Timeout:   cfg.Timeout,
		// A redirect is an answer: report it rather than check its target.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return p, nil
}

// Check runs one round: every target concurrently, then the webhooks of
// the state changes it found. It returns the round's checks in target order.
func (p *Prober) Check(ctx context.Context) []ProbeCheck {
	checks := make([]ProbeCheck, len(p.cfg.Targets))
	var wg sync.WaitGroup
	for i, t := range p.cfg.Targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			checks[i] = p.checkOne(ctx, t)
		}()
	}
	wg.Wait()
	var events []ProbeEvent
	p.mu.Lock()
	for _, c := range checks {
		if ev, ok := p.record(c); ok {
			events = append(events, ev)
		}
	}
	p.mu.Unlock()
	for _, ev := range events {
		if p.cfg.OnEvent != nil {
			p.cfg.OnEvent(ev)
		}
		if err := p.deliver(ctx, ev); err != nil {
			p.cfg.Logger.Warn("probe webhook failed", "webhook", p.cfg.Webhook, "target", ev.Target, "err", err)
			p.mu.Lock()
			p.targets[ev.Target].hookErrs++
			p.mu.Unlock()
		}
	}
	return checks
}

func (p *Prober) checkOne(ctx context.Context, target string) ProbeCheck {
	c := ProbeCheck{Target: target, At: p.cfg.Now()}
	start := time.Now() // latency always on the real clock
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		c.Reason = err.Error()
		return c
	}
	req.Header.Set("User-Agent", defaultUserAgent+" probe")
	if p.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+p.cfg.Token)
	}
	resp, err := p.client.Do(req)
	if err == nil {
		_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 16<<20))
		resp.Body.Close()
		c.Status = resp.StatusCode
	}
	c.Latency = time.Since(start)
	switch {
	case err != nil:
		c.Reason = err.Error()
	case c.Status >= 400:
		c.Reason = fmt.Sprintf("status %d", c.Status)
	default:
		c.Up = true
	}
	return c
}

// record adds c to its target's statistics and returns the state change
// event, if any. p.mu must be held.
func (p *Prober) record(c ProbeCheck) (ProbeEvent, bool) {
	s := p.targets[c.Target]
	s.checks++
	s.last = &c
	prev := s.state
	if c.Up {
		s.up++
		s.sum += c.Latency
		s.max = max(s.max, c.Latency)
		if len(s.samples) == p.cfg.MaxSamples {
			s.samples = s.samples[1:]
		}
		s.samples = append(s.samples, c.Latency)
		s.state = "up"
	} else {
		s.state = "down"
	}
	var open *Incident
	if n := len(s.incidents); n > 0 && s.incidents[n-1].Open {
		open = &s.incidents[n-1]
		open.Duration = c.At.Sub(open.Start)
	}
	switch {
	case prev == s.state, prev == "unknown" && c.Up:
		return ProbeEvent{}, false
	case !c.Up:
		s.incidents = append(s.incidents, Incident{Target: c.Target, Start: c.At, Open: true, Reason: c.Reason})
		open = &s.incidents[len(s.incidents)-1]
	default: // down → up
		open.End, open.Open = c.At, false
	}
	return ProbeEvent{Target: c.Target, State: s.state, Previous: prev, At: c.At, Check: c, Incident: *open}, true
}

func (p *Prober) deliver(ctx context.Context, ev ProbeEvent) error {
	if p.cfg.Webhook == "" {
		return nil
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.cfg.Webhook, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) //nolint:errcheck // draining only
	if resp.StatusCode >= 300 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

// Run checks every Interval, starting at once, until ctx is done; it
// returns ctx's error. onRound, when set, is called after every round.
func (p *Prober) Run(ctx context.Context, onRound func([]ProbeCheck)) error {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		checks := p.Check(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if onRound != nil {
			onRound(checks)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Report returns the statistics of every target, in target order.
func (p *Prober) Report() []TargetReport {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]TargetReport, 0, len(p.cfg.Targets))
	for _, t := range p.cfg.Targets {
		s := p.targets[t]
		r := TargetReport{Target: t, State: s.state, Checks: s.checks, Up: s.up, Max: s.max,
			Incidents: slices.Clone(s.incidents), WebhookErrs: s.hookErrs}
		if s.checks > 0 {
			r.Uptime = 100 * float64(s.up) / float64(s.checks)
		}
		if s.up > 0 {
			r.Avg = s.sum / time.Duration(s.up)
			sorted := slices.Clone(s.samples)
			slices.Sort(sorted)
			r.P95 = sorted[(len(sorted)*95+99)/100-1] // nearest rank
		}
		for _, in := range r.Incidents {
			r.Downtime += in.Duration
		}
		if s.last != nil {
			last := *s.last
			r.LastCheck = &last
		}
		out = append(out, r)
	}
	return out
}
