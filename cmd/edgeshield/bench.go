package main

import (
	"context"
	"fmt"
	"io"
)

// runBench and runProbe are wired to package bench once it lands.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "edgeshield bench: not built yet")
	return 2
}

func runProbe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "edgeshield probe: not built yet")
	return 2
}
