package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// errBackgroundStuck: background work did not stop within
// backgroundGrace of its cancellation.
var errBackgroundStuck = errors.New("background work did not stop after cancellation")

// backgroundGrace is how long Shutdown waits for cancelled background work
// (an upstream call sees its context at once; a fill's next Write fails).
const backgroundGrace = 5 * time.Second

// background owns the node's work that outlives a request (fills,
// revalidations, body drains): every task runs under its base context,
// is tracked until it returns, and has its panic recovered into panics.
type background struct {
	base   context.Context // every upstream call and background task; cancelled by stop
	cancel context.CancelFunc
	log    *slog.Logger
	abort  func(err error) // fails every flight's next write (set by the pipeline)
	panics atomic.Uint64   // tasks that panicked (Stats.Panics adds them)

	stopping chan struct{} // closed when stop begins: tasks that only wait end
	mu       sync.Mutex    // guards closed and wg.Add
	closed   bool          // stop began: no new background work
	stuck    bool          // work outlived its cancellation: the store stays open
	wg       sync.WaitGroup
	running  atomic.Int64 // tasks that have not returned yet
}

func newBackground(log *slog.Logger) *background {
	b := &background{log: log, stopping: make(chan struct{})}
	b.base, b.cancel = context.WithCancel(context.Background())
	return b
}

// goBackground runs fn on a goroutine b owns: tracked until it returns,
// its panic recovered. It reports false, and starts nothing, once stop has
// begun.
func (b *background) goBackground(what string, fn func()) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.wg.Add(1)
	b.running.Add(1)
	go func() {
		defer b.wg.Done()
		defer b.running.Add(-1)
		defer b.recover(what)
		fn()
	}()
	return true
}

// recover, deferred, turns a panic of the task what into a count and a log.
func (b *background) recover(what string) {
	if r := recover(); r != nil {
		b.panics.Add(1)
		b.log.Error("panic in background task", "task", what, "panic", r)
	}
}

// stop stops new background work and waits for what runs; when ctx ends
// first it cancels the base context (every upstream call) and aborts the
// flights (every fill), then waits backgroundGrace more. Either way the
// base context is cancelled on return.
func (b *background) stop(ctx context.Context) error {
	b.mu.Lock()
	if !b.closed {
		close(b.stopping)
	}
	b.closed = true
	b.mu.Unlock()
	defer b.cancel()
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done: // finished already: not an error even if ctx ended too
		return nil
	default:
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	b.cancel()
	if b.abort != nil {
		b.abort(fmt.Errorf("shutting down: %w", ctx.Err()))
	}
	select {
	case <-done:
		return fmt.Errorf("background fills cancelled: %w", ctx.Err())
	case <-time.After(backgroundGrace):
		b.stuck = true
		return errBackgroundStuck
	}
}
