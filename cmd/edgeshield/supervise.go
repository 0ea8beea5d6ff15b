package main

// Supervisor mode (`run --supervise`, on by default as PID 1). In a
// container the first process is PID 1, and when it exits the container
// stops: an upgrade, in which the old process exits after the new one took
// over, would stop the container. So PID 1 stays a small supervisor: it
// starts `edgeshield run` as its worker, forwards signals to the current
// worker (SIGUSR2 upgrades it; SIGTERM, SIGINT, SIGHUP as usual), reaps
// every child, and, since the new worker of an upgrade is the old worker's
// child, adopts it when the old one exits (Linux re-parents orphans to PID 1,
// or to a process marked child subreaper, which the supervisor also is, so
// the mode works outside containers too). It exits with the worker's status
// when a worker exits without a successor.
//
// The new worker runs the binary at the same path: `docker cp` a new binary
// to /edgeshield (the running one keeps its old file), then `docker kill
// --signal USR2 <container>`.

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// supervise runs `edgeshield run args… --supervise=false` and supervises
// it; see above.
func supervise(args []string, stderr io.Writer) int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "edgeshield supervise:", err)
		return 1
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(stderr, "edgeshield supervise: child subreaper:", err)
		return 1
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR2, syscall.SIGCHLD)
	defer signal.Stop(sigs)
	argv := append(append([]string{exe, "run"}, args...), "--supervise=false")
	p, err := os.StartProcess(exe, argv, &os.ProcAttr{Files: []*os.File{os.Stdin, os.Stdout, os.Stderr}})
	if err != nil {
		fmt.Fprintln(stderr, "edgeshield supervise:", err)
		return 1
	}
	s := &supervisor{worker: p.Pid, stderr: stderr}
	fmt.Fprintf(stderr, "edgeshield supervise: worker pid %d\n", s.worker)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			s.forward(sig.(syscall.Signal))
			continue
		}
		if code, done := s.reap(); done {
			return code
		}
	}
	return 1 // not reached: sigs is never closed
}

// supervisor is the state of supervise's loop (one goroutine).
type supervisor struct {
	worker   int            // the current worker's pid
	stopping syscall.Signal // the terminating signal forwarded, 0 before
	stderr   io.Writer
}

func (s *supervisor) forward(sig syscall.Signal) {
	if sig == syscall.SIGTERM || sig == syscall.SIGINT {
		s.stopping = sig
	}
	if err := syscall.Kill(s.worker, sig); err != nil {
		fmt.Fprintf(s.stderr, "edgeshield supervise: %v to worker %d: %v\n", sig, s.worker, err)
	}
}

// reap collects every exited child. When the worker exited it adopts its
// successor (an upgrade) or reports done with the worker's exit code.
func (s *supervisor) reap() (code int, done bool) {
	for range 1024 { // more exited children than that at once cannot be
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return 0, false
		}
		if pid != s.worker {
			continue // an orphan re-parented to us, e.g. a failed upgrade's process
		}
		next := newestChild(os.Getpid())
		if next == 0 {
			fmt.Fprintf(s.stderr, "edgeshield supervise: worker %d exited (%s)\n", pid, exitText(ws))
			return exitCode(ws), true
		}
		fmt.Fprintf(s.stderr, "edgeshield supervise: worker %d handed over to %d\n", pid, next)
		s.worker = next
		if s.stopping != 0 { // stopping during the upgrade: stop the new one too
			s.forward(s.stopping)
		}
	}
	return 0, false
}

func exitCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

func exitText(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return "exit " + strconv.Itoa(ws.ExitStatus())
}

// newestChild returns the most recently started live child of parent
// (from /proc), 0 if there is none.
func newestChild(parent int) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	best, bestStart := 0, uint64(0)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := procStat(pid)
		if err != nil || st.ppid != parent || st.state == 'Z' {
			continue
		}
		if best == 0 || st.start > bestStart {
			best, bestStart = pid, st.start
		}
	}
	return best
}

// stat is what supervise needs of /proc/<pid>/stat (proc(5)).
type stat struct {
	state byte
	ppid  int
	start uint64 // starttime, clock ticks since boot
}

func procStat(pid int) (stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, err
	}
	// "pid (comm) state ppid …": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return stat{}, fmt.Errorf("/proc/%d/stat: no comm", pid)
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 20 {
		return stat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	start, err2 := strconv.ParseUint(string(f[19]), 10, 64)
	if err1 != nil || err2 != nil || len(f[0]) != 1 {
		return stat{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return stat{state: f[0][0], ppid: ppid, start: start}, nil
}
