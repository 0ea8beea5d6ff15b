package edge

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// errBackgroundStuck: background work did not stop within
// backgroundGrace of its cancellation.
var errBackgroundStuck = errors.New("background work did not stop after cancellation")

// backgroundGrace is how long Shutdown waits for cancelled background work
// (an upstream call sees its context at once; a fill's next Write fails).
const backgroundGrace = 5 * time.Second

// goBackground runs fn on a goroutine the node owns: tracked until it
// returns, its panic recovered into n.stats.panics. It reports false, and
// starts nothing, once Shutdown has begun.
func (n *Node) goBackground(what string, fn func()) bool {
	n.bgMu.Lock()
	defer n.bgMu.Unlock()
	if n.bgClosed {
		return false
	}
	n.bgWG.Add(1)
	n.bgRunning.Add(1)
	go func() {
		defer n.bgWG.Done()
		defer n.bgRunning.Add(-1)
		defer n.recoverBackground(what)
		fn()
	}()
	return true
}

func (n *Node) recoverBackground(what string) {
	if r := recover(); r != nil {
		n.stats.panics.Add(1)
		n.log.Error("panic in background task", "task", what, "panic", r)
	}
}

// stopBackground stops new background work and waits for what runs; when
// ctx ends first it cancels the node's base context (every upstream call)
// and aborts the flights (every fill), then waits backgroundGrace more.
// Either way the base context is cancelled on return.
func (n *Node) stopBackground(ctx context.Context) error {
	n.bgMu.Lock()
	n.bgClosed = true
	n.bgMu.Unlock()
	defer n.cancelBase()
	done := make(chan struct{})
	go func() { n.bgWG.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	default:
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	n.cancelBase()
	n.flights.Abort(fmt.Errorf("shutting down: %w", ctx.Err()))
	select {
	case <-done:
		return fmt.Errorf("background fills cancelled: %w", ctx.Err())
	case <-time.After(backgroundGrace):
		n.bgStuck = true
		return errBackgroundStuck
	}
}
