// Command edgeshield runs an Edgeshield edge node, the demo origin, the
// bench harness and the uptime probe.
//
//	edgeshield run [--config FILE] [--origin URL] [--listen ADDR] [--admin ADDR] [--pid-file F]
//	edgeshield upgrade [--pid-file F | --pid N]
//	edgeshield origin [--listen ADDR] [--root DIR] [--latency D] [--fault SPEC]…
//	edgeshield bench <steady|rush|capacity> [flags]
//	edgeshield probe --targets URL[,URL…] [flags]
//	edgeshield version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/edgeshield/edgeshield/edge"
	"github.com/edgeshield/edgeshield/origin/demo"
)

const usage = `usage: edgeshield <command> [flags]

commands:
  run      run an edge node (default config: 127.0.0.1:8080 in front of the built-in demo origin)
  upgrade  upgrade a running node to the binary at its path, with no failed request (SIGUSR2)
  origin   run the demo origin alone
  bench    load-test any URL: steady, rush, capacity (see 'edgeshield bench -h')
  probe    uptime probe for edges and content URLs (see 'edgeshield probe -h')
  version  print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "run":
		return runEdge(ctx, args[1:], stdout, stderr)
	case "upgrade":
		return runUpgrade(args[1:], stdout, stderr)
	case "origin":
		return runOrigin(ctx, args[1:], stdout, stderr)
	case "bench":
		return runBench(ctx, args[1:], stdout, stderr)
	case "probe":
		return runProbe(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "edgeshield", edge.Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "edgeshield: unknown command %q\n%s", args[0], usage)
	return 2
}

func runEdge(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var uf upgradeFlags
	load, shutdownTimeout, code := edgeConfig(args, stderr, uf.register)
	if code != 0 {
		return code
	}
	cfg, err := load()
	if err != nil {
		fmt.Fprintln(stderr, "edgeshield: config:", err)
		return 2
	}
	if uf.supervise {
		return supervise(args, stderr)
	}
	up := newUpgrader(uf, stderr)
	setMemoryLimit(cfg)
	logger, level := edge.NewLeveledLogger(cfg.Log, stderr)
	demoOrigin := cfg.Origin.URL == "demo"
	if demoOrigin {
		// The built-in demo origin, in this process on a loopback port;
		// stopped after the node (deferred first, runs last).
		d, err := demo.New(demo.Config{Logger: logger.With("component", "demo-origin")})
		if err == nil {
			err = d.Start("127.0.0.1:0")
		}
		if err != nil {
			fmt.Fprintln(stderr, "edgeshield: demo origin:", err)
			return 1
		}
		defer d.Close()
		cfg.Origin.URL = d.URL()
	}
	// SIGHUP and POST /reload read the same sources again; "demo" stays
	// the demo origin this process started.
	reload := func() (edge.Config, error) {
		c, err := load()
		if err == nil && demoOrigin && c.Origin.URL == "demo" {
			c.Origin.URL = cfg.Origin.URL
		}
		return c, err
	}
	node, err := edge.New(cfg, up.options(edge.Options{Logger: logger, LogLevel: level, LoadConfig: reload}))
	if err != nil {
		fmt.Fprintln(stderr, "edgeshield:", err)
		return 1
	}
	if err := node.Start(); err != nil {
		fmt.Fprintln(stderr, "edgeshield:", err)
		_ = node.Shutdown(context.Background())
		up.stop(false)
		return 1
	}
	if err := up.ready(); err != nil {
		fmt.Fprintln(stderr, "edgeshield:", err)
	}
	base := "http://" + node.Addr()
	fmt.Fprintf(stdout, "edgeshield %s: edge %s in front of origin %s\n", edge.Version, base, node.OriginURL())
	if demoOrigin {
		fmt.Fprintf(stdout, "try:\n  %s/            (the demo site; reload it: the second request is a hit)\n", base)
		fmt.Fprintf(stdout, "  curl -sI %s/img/hero-1m.jpg | grep -i cache-status\n", base)
		fmt.Fprintf(stdout, "  curl -s -r 0-99 -o /dev/null -w '%%{http_code}\\n' %s/media/intro.mp4\n", base)
	}
	if a := node.AdminAddr(); a != "" {
		fmt.Fprintf(stdout, "admin: http://%s/stats  http://%s/readyz  (POST /purge?url=…)\n", a, a)
	}
	if a := node.TLSAddr(); a != "" {
		fmt.Fprintf(stdout, "https: %s (certificates: http://%s/tls)\n", a, node.AdminAddr())
	}
	fmt.Fprintln(stdout, "Ctrl-C to stop")
	uctx := up.watch(ctx, node, shutdownTimeout)
	code = waitAndShutdown(uctx, node, cfg.Server.DrainDelay.D()+shutdownTimeout, stderr)
	up.stop(ctx.Err() == nil) // uctx ended, ctx did not: handed over
	return code
}

// waitAndShutdown serves until ctx ends (SIGINT, SIGTERM), reloading the
// configuration and certificates and reopening logs on SIGHUP, then shuts
// the node down within grace.
func waitAndShutdown(ctx context.Context, node *edge.Node, grace time.Duration, stderr io.Writer) int {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for waiting := true; waiting; {
		select {
		case <-hup:
			if res, err := node.ReloadConfig(); err != nil {
				fmt.Fprintln(stderr, "edgeshield: reload refused, running configuration kept:", err)
			} else if len(res.RestartNeeded) > 0 {
				fmt.Fprintln(stderr, "edgeshield: reload: these keys take effect at the next start:", strings.Join(res.RestartNeeded, ", "))
			}
			if err := node.ReloadTLS(); err != nil {
				fmt.Fprintln(stderr, "edgeshield: tls reload:", err)
			}
			if err := node.ReopenLogs(); err != nil {
				fmt.Fprintln(stderr, "edgeshield:", err)
			}
		case <-ctx.Done():
			waiting = false
		}
	}
	fmt.Fprintln(stderr, "edgeshield: shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := node.Shutdown(sctx); err != nil {
		fmt.Fprintln(stderr, "edgeshield: shutdown:", err)
		return 1
	}
	return 0
}

// edgeConfig reads run's flags (extra registers more); load reads the
// configuration (defaults, file, environment, flags) and validates it, at
// start and on every reload. A non-zero code ends run.
func edgeConfig(args []string, stderr io.Writer, extra ...func(*flag.FlagSet)) (load func() (edge.Config, error), shutdown time.Duration, code int) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	for _, register := range extra {
		register(fs)
	}
	configPath := fs.String("config", os.Getenv("EDGESHIELD_CONFIG"), "YAML config file (see configs/edge.yaml); default: built-in demo setup")
	originURL := fs.String("origin", "", "origin URL (overrides origin.url), or \"demo\"")
	listen := fs.String("listen", "", "public listen address (overrides listen)")
	admin := fs.String("admin", "", "admin listen address (overrides admin.listen)")
	shutdownTimeout := fs.Duration("shutdown-timeout", 30*time.Second, "max time to finish in-flight requests on SIGTERM")
	if err := fs.Parse(args); err != nil {
		return nil, 0, 2
	}
	load = func() (edge.Config, error) {
		cfg, err := edge.LoadConfig(*configPath, os.Environ())
		if err != nil {
			return edge.Config{}, err
		}
		if *originURL != "" {
			cfg.Origin.URL = *originURL
		}
		if *listen != "" {
			cfg.Listen = *listen
		}
		if *admin != "" {
			cfg.Admin.Listen = *admin
		}
		var src []byte
		if *configPath != "" {
			src, _ = os.ReadFile(*configPath)
		}
		if err := cfg.Validate(*configPath, src); err != nil {
			return edge.Config{}, err
		}
		return cfg, nil
	}
	return load, *shutdownTimeout, 0
}

// setMemoryLimit gives the Go runtime a soft memory limit derived from
// cache.max_bytes (unless GOMEMLIMIT is set): evicted and rejected bodies are
// garbage until the next collection, and with the default GOGC the heap
// would grow to about twice the live cache before one. With the limit, RSS
// stays within 1.3 × max_bytes + 64 MiB (bench/wrk/rss.sh measures it).
func setMemoryLimit(cfg edge.Config) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	limit := int64(cfg.Cache.MaxBytes) + int64(cfg.Cache.MaxBytes)/4 + 48<<20
	debug.SetMemoryLimit(limit)
}

func runOrigin(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("origin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8081", "listen address")
	root := fs.String("root", "", "serve this directory instead of the embedded sample site")
	latency := fs.Duration("latency", 0, "added latency per response")
	var faults []demo.Fault
	fs.Func("fault", "inject a fault, repeatable: e.g. 'prefix=/img/,status=503,rate=0.1', 'prefix=/api/,delay=250ms', 'reset,rate=0.01'", func(v string) error {
		f, err := demo.ParseFault(v)
		if err == nil {
			faults = append(faults, f)
		}
		return err
	})
	if err := fs.Parse(args); err != nil {
		return 2
	}
	srv, err := demo.New(demo.Config{Root: *root, Latency: *latency, Faults: faults, Logger: edge.NewLogger(edge.LogConfig{Level: "info"}, stderr)})
	if err != nil {
		fmt.Fprintln(stderr, "edgeshield origin:", err)
		return 1
	}
	if err := srv.Start(*listen); err != nil {
		fmt.Fprintln(stderr, "edgeshield origin:", err)
		return 1
	}
	fmt.Fprintf(stdout, "demo origin on %s (counts: %s/__origin/counts)\n", srv.URL(), srv.URL())
	<-ctx.Done()
	if err := srv.Close(); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(stderr, "edgeshield origin:", err)
		return 1
	}
	return 0
}
