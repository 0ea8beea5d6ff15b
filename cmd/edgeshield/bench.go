package main

import (
	"context"
	"io"

	"github.com/edgeshield/edgeshield/bench"
)

// runBench is `edgeshield bench …`: the load harness (package bench).
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return bench.RunCLI(ctx, args, stdout, stderr)
}

// runProbe is `edgeshield probe …`: the uptime probe (package bench).
func runProbe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return bench.ProbeCLI(ctx, args, stdout, stderr)
}
