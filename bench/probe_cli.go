package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// ProbeCLI implements `edgeshield probe --targets URL[,URL…] [--interval 60s]
// [--timeout 10s] [--once] [--token T | --token-file F] [--webhook URL]
// [--json FILE]` and returns the
// exit status. Without --once it checks until ctx is done (SIGINT/SIGTERM in
// main), printing one line per check, then prints the uptime report and
// returns ExitOK. With --once it runs one round and returns ExitOK when every
// target is up, ExitViolated otherwise (a container health check).
func ProbeCLI(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("edgeshield probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var targets stringList
	fs.Var(&targets, "targets", "URLs to check, comma-separated (repeatable)")
	interval := fs.Duration("interval", time.Minute, "time between rounds of checks")
	timeout := fs.Duration("timeout", 10*time.Second, "timeout of one check and of one webhook delivery")
	once := fs.Bool("once", false, "one round; exit status 0 when every target is up, 1 otherwise")
	webhook := fs.String("webhook", "", "POST a JSON event to this URL on every state change")
	jsonOut := fs.String("json", "", "write the uptime report as JSON to FILE on exit")
	quiet := fs.Bool("quiet", false, "print state changes and the final report only")
	insecure := fs.Bool("insecure", false, "https: do not verify certificates")
	cacert := fs.String("cacert", "", "https: PEM file of CA certificates to trust")
	token := fs.String("token", "", "send 'Authorization: Bearer TOKEN' (the admin listener's admin.token)")
	tokenFile := fs.String("token-file", "", "read the bearer token from FILE (e.g. a Docker secret); keeps it out of ps")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	var list []string
	for _, t := range targets {
		for _, u := range strings.Split(t, ",") {
			if u = strings.TrimSpace(u); u != "" {
				list = append(list, u)
			}
		}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "edgeshield probe: unexpected argument %q\n", fs.Arg(0))
		return ExitUsage
	}
	tlsCfg, err := (&runOpts{insecure: *insecure, cacert: *cacert}).tlsConfig()
	if err != nil {
		fmt.Fprintf(stderr, "edgeshield probe: %v\n", err)
		return ExitUsage
	}
	tok, err := probeToken(*token, *tokenFile)
	if err != nil {
		fmt.Fprintf(stderr, "edgeshield probe: %v\n", err)
		return ExitUsage
	}
	cfg := ProbeConfig{Targets: list, Interval: *interval, Timeout: *timeout, Webhook: *webhook, TLS: tlsCfg, Token: tok}
	// State changes get their own line in the monitoring loop; --once
	// prints the one round's checks, which say the same.
	onEvent := func(ev ProbeEvent) {
		line := fmt.Sprintf("%s  %s is %s", ev.At.Format(time.RFC3339), ev.Target, strings.ToUpper(ev.State))
		if ev.State == "up" {
			line += fmt.Sprintf(" after %v down", ev.Incident.Duration.Round(time.Millisecond))
		} else {
			line += ": " + ev.Check.Reason
		}
		fmt.Fprintln(stdout, line)
	}
	if !*once {
		cfg.OnEvent = onEvent
	}
	p, err := NewProber(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "edgeshield probe: %v\n", err)
		return ExitUsage
	}
	printRound := func(checks []ProbeCheck) {
		if *quiet {
			return
		}
		for _, c := range checks {
			state, detail := "UP  ", fmt.Sprint(c.Status)
			if !c.Up {
				state, detail = "DOWN", c.Reason
			}
			fmt.Fprintf(stdout, "%s  %s  %8s  %s  %s\n", c.At.Format(time.RFC3339), state,
				fmtDur(c.Latency), c.Target, detail)
		}
	}
	if *once {
		checks := p.Check(ctx)
		printRound(checks)
		code := ExitOK
		for _, c := range checks {
			if !c.Up {
				code = ExitViolated
			}
		}
		if err := writeProbeJSON(*jsonOut, p.Report()); err != nil {
			fmt.Fprintf(stderr, "edgeshield probe: %v\n", err)
			return ExitViolated
		}
		return code
	}
	p.Run(ctx, printRound) //nolint:errcheck // ends with ctx's error, the normal way to stop
	rep := p.Report()
	if err := WriteProbeReport(stdout, rep); err != nil {
		fmt.Fprintf(stderr, "edgeshield probe: %v\n", err)
		return ExitViolated
	}
	if err := writeProbeJSON(*jsonOut, rep); err != nil {
		fmt.Fprintf(stderr, "edgeshield probe: %v\n", err)
		return ExitViolated
	}
	return ExitOK
}

// probeToken returns the bearer token of --token or --token-file (one of
// them at most). The file's surrounding white space, such as the newline
// `echo` or a secrets store leaves, is not part of the token.
func probeToken(token, file string) (string, error) {
	switch {
	case token != "" && file != "":
		return "", fmt.Errorf("%w: --token and --token-file: give one", ErrBadConfig)
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", fmt.Errorf("%w: --token-file %s is empty", ErrBadConfig, file)
		}
		return t, nil
	}
	return token, nil
}

func writeProbeJSON(path string, rep []TargetReport) error {
	return writeFile(path, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Targets []TargetReport `json:"targets"`
		}{rep})
	})
}

// WriteProbeReport writes the uptime table and the incidents of every target.
func WriteProbeReport(w io.Writer, rep []TargetReport) error {
	ew := &errWriter{w: w}
	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target\tstate\tchecks\tuptime\tavg\tp95\tmax\tincidents\tdowntime")
	for _, r := range rep {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.3f%%\t%s\t%s\t%s\t%d\t%v\n", r.Target, r.State, r.Checks, r.Uptime,
			fmtDur(r.Avg), fmtDur(r.P95), fmtDur(r.Max), len(r.Incidents), r.Downtime.Round(time.Millisecond))
	}
	tw.Flush()
	for _, r := range rep {
		for _, in := range r.Incidents {
			end := in.End.Format(time.RFC3339)
			if in.Open {
				end = "(ongoing)"
			}
			ew.printf("incident %s: %s .. %s, %v: %s\n", r.Target, in.Start.Format(time.RFC3339), end,
				in.Duration.Round(time.Millisecond), in.Reason)
		}
	}
	return ew.err
}
