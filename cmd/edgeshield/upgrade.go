package main

// Binary upgrade in place (issue 13), nginx's USR2 with tableflip:
//
//  1. `kill -USR2 <pid>` (or `edgeshield upgrade --pid-file F`) reaches the
//     running process. It pauses its gossip membership, which releases the
//     gossip port (edge.Node.PauseGossip: memberlist cannot adopt an
//     inherited socket), and starts the binary at its own path again,
//     handing it every listening socket (tableflip).
//  2. The new process builds its node on the inherited sockets, binds the
//     gossip port, joins as the same member, and reports ready.
//  3. The old process stops accepting (the sockets stay open in the new
//     one, so nothing is refused), answers requests on its keep-alive
//     connections with Connection: close for --handover-grace, closes what
//     is idle, finishes in-flight requests and exits (edge.Node.Handover).
//
// If the new process exits or is not ready within --upgrade-timeout, the
// old one resumes gossip and keeps serving, and logs why.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/edgeshield/edgeshield/edge"
)

// upgradeFlags are run's flags for upgrades and supervision.
type upgradeFlags struct {
	pidFile   string
	timeout   time.Duration
	grace     time.Duration
	supervise bool
}

// register adds the flags to run's flag set.
func (u *upgradeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&u.pidFile, "pid-file", "", "write the serving process's pid to this file (rewritten by each upgrade; see `edgeshield upgrade`)")
	fs.DurationVar(&u.timeout, "upgrade-timeout", 30*time.Second, "on SIGUSR2, how long the new process has to become ready before the upgrade is abandoned")
	fs.DurationVar(&u.grace, "handover-grace", 2*time.Second, "after an upgrade, how long the old process answers keep-alive requests with Connection: close before closing idle connections")
	fs.BoolVar(&u.supervise, "supervise", os.Getpid() == 1, "stay in the foreground as a supervisor of the serving process, so that upgrades work as PID 1 of a container (default: on when PID 1)")
}

// upgrader is the running process's side of upgrades.
type upgrader struct {
	flags  upgradeFlags
	upg    *tableflip.Upgrader // nil: upgrades are off (see newUpgrader)
	stderr io.Writer

	parentGone chan struct{} // closed once the process we replaced has exited
}

// newUpgrader sets up tableflip. Without it (a second node in one process,
// as in tests, or an OS without fd passing) the node runs with plain
// listeners and SIGUSR2 is refused with a log line.
func newUpgrader(f upgradeFlags, stderr io.Writer) *upgrader {
	u := &upgrader{flags: f, stderr: stderr, parentGone: make(chan struct{})}
	upg, err := tableflip.New(tableflip.Options{PIDFile: f.pidFile, UpgradeTimeout: f.timeout})
	if err != nil {
		fmt.Fprintln(stderr, "edgeshield: upgrades off:", err)
		close(u.parentGone)
		return u
	}
	u.upg = upg
	go func() {
		if err := upg.WaitForParent(context.Background()); err != nil {
			fmt.Fprintln(stderr, "edgeshield: previous process:", err)
		}
		close(u.parentGone)
	}()
	return u
}

// options are the node's socket hooks: tableflip's, which inherit the
// sockets of the process being replaced.
func (u *upgrader) options(o edge.Options) edge.Options {
	if u.upg == nil {
		return o
	}
	o.Listen, o.ListenPacket = u.listen, u.listenPacket
	return o
}

// listen is tableflip's Listen, which knows a socket by network and the
// configured address. An address with port 0 is not handed over: the next
// process would be given another port anyway, and two such listeners on
// one IP would be one socket to tableflip.
func (u *upgrader) listen(network, addr string) (net.Listener, error) {
	if !u.inherits(addr) {
		return net.Listen(network, addr)
	}
	return u.upg.Listen(network, addr)
}

func (u *upgrader) listenPacket(network, addr string) (net.PacketConn, error) {
	if !u.inherits(addr) {
		return net.ListenPacket(network, addr)
	}
	return u.upg.ListenPacket(network, addr)
}

func (u *upgrader) inherits(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err != nil || (port != "0" && port != "")
}

// ready tells the process we replaced (if any) to hand over, and writes the
// pid file.
func (u *upgrader) ready() error {
	if u.upg == nil {
		if u.flags.pidFile != "" {
			return os.WriteFile(u.flags.pidFile, []byte(strconv.Itoa(os.Getpid())), 0o644)
		}
		return nil
	}
	return u.upg.Ready()
}

// watch upgrades on SIGUSR2. After a successful upgrade it hands the node
// over and ends the returned context, so that the caller's shutdown (which
// waits for the handover) runs and the process exits.
func (u *upgrader) watch(ctx context.Context, node *edge.Node, shutdownTimeout time.Duration) context.Context {
	ctx, cancel := context.WithCancel(ctx)
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	go func() {
		defer signal.Stop(usr2)
		for {
			select {
			case <-ctx.Done():
				return
			case <-usr2:
				if !u.upgrade(node) {
					continue
				}
				hctx, hcancel := context.WithTimeout(context.Background(), u.flags.grace+shutdownTimeout)
				if err := node.Handover(hctx, u.flags.grace); err != nil {
					fmt.Fprintln(u.stderr, "edgeshield: handover:", err)
				}
				hcancel()
				cancel()
				return
			}
		}
	}()
	return ctx
}

// upgrade starts the new process and reports whether it is ready; on
// failure this process keeps serving, with its gossip resumed.
func (u *upgrader) upgrade(node *edge.Node) bool {
	if u.upg == nil {
		fmt.Fprintln(u.stderr, "edgeshield: SIGUSR2 ignored: upgrades are off in this process")
		return false
	}
	select {
	case <-u.parentGone:
	default:
		fmt.Fprintln(u.stderr, "edgeshield: upgrade refused: the process this one replaced is still finishing its requests; try again once it has exited")
		return false
	}
	fmt.Fprintf(u.stderr, "edgeshield: upgrading: starting %s (pid %d hands over once it is ready)\n", os.Args[0], os.Getpid())
	if err := node.PauseGossip(); err != nil {
		fmt.Fprintln(u.stderr, "edgeshield: upgrade: pause gossip:", err)
	}
	err := u.upg.Upgrade()
	if err == nil {
		fmt.Fprintf(u.stderr, "edgeshield: upgrade: the new process is ready; pid %d hands over\n", os.Getpid())
		return true
	}
	fmt.Fprintf(u.stderr, "edgeshield: upgrade failed, still serving (pid %d): %v\n", os.Getpid(), err)
	if err := node.ResumeGossip(); err != nil {
		fmt.Fprintln(u.stderr, "edgeshield: upgrade: resume gossip:", err)
	}
	return false
}

// stop ends upgrades; after a shutdown that was not a handover it removes
// the pid file if it is still ours.
func (u *upgrader) stop(handedOver bool) {
	if u.upg != nil {
		u.upg.Stop()
	}
	if u.flags.pidFile == "" || handedOver {
		return
	}
	if pid, err := readPID(u.flags.pidFile); err == nil && pid == os.Getpid() {
		os.Remove(u.flags.pidFile)
	}
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s: not a pid: %q", path, b)
	}
	return pid, nil
}

// runUpgrade is `edgeshield upgrade`: it sends SIGUSR2 to the running
// node and waits for the outcome: the pid file names a new process and the
// old one has exited (exit 0), or the old one still runs after --timeout
// (exit 1: see its log for why the new process failed).
func runUpgrade(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("upgrade", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pidFile := fs.String("pid-file", "", "the pid file given to `edgeshield run --pid-file`")
	pidFlag := fs.Int("pid", 0, "the pid of the node (instead of --pid-file; then only the old process's exit is checked)")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the old process to hand over and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	old := *pidFlag
	if *pidFile != "" {
		pid, err := readPID(*pidFile)
		if err != nil {
			fmt.Fprintln(stderr, "edgeshield upgrade:", err)
			return 1
		}
		old = pid
	}
	if old <= 0 {
		fmt.Fprintln(stderr, "edgeshield upgrade: give --pid-file or --pid")
		return 2
	}
	if err := syscall.Kill(old, syscall.SIGUSR2); err != nil {
		fmt.Fprintf(stderr, "edgeshield upgrade: signal pid %d: %v\n", old, err)
		return 1
	}
	next, err := waitUpgraded(old, *pidFile, *timeout)
	if err != nil {
		fmt.Fprintln(stderr, "edgeshield upgrade:", err)
		return 1
	}
	if next != 0 {
		fmt.Fprintf(stdout, "upgraded: pid %d handed over to pid %d\n", old, next)
	} else {
		fmt.Fprintf(stdout, "upgraded: pid %d handed over and exited\n", old)
	}
	return 0
}

// waitUpgraded polls until the old process has exited and, with a pid
// file, the file names another live process.
func waitUpgraded(old int, pidFile string, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		next := 0
		if pidFile != "" {
			next, _ = readPID(pidFile)
		}
		if !alive(old) && (pidFile == "" || (next != old && alive(next))) {
			return next, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	if alive(old) {
		return 0, fmt.Errorf("pid %d still runs after %v: the upgrade failed or its requests are still finishing; see its log", old, timeout)
	}
	return 0, errors.New("the old process exited but " + pidFile + " names no live process")
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	st, err := procStat(pid)
	return err != nil || st.state != 'Z'
}
