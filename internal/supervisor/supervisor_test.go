package supervisor

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// testOptions keep the tests fast; the first restart still waits 1s.
var testOptions = Options{MaxBackoff: 200 * time.Millisecond, StopTimeout: 2 * time.Second}

// syncBuffer is a Log writer safe for the supervisor's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// testOwner returns an owner id unique to this test and registers a cleanup
// that kills whatever process still carries it. Register it before any
// supervisor, so it runs after their StopAll.
func testOwner(t *testing.T) string {
	t.Helper()
	rnd := make([]byte, 6)
	if _, err := rand.Read(rnd); err != nil {
		t.Fatal(err)
	}
	owner := "test-" + t.Name() + "-" + hex.EncodeToString(rnd)
	t.Cleanup(func() {
		for _, f := range FindProcesses(owner) {
			t.Errorf("process %s (pid %d) survived StopAll", f.Name, f.PID)
			_ = syscall.Kill(-f.PID, syscall.SIGKILL)
			_ = syscall.Kill(f.PID, syscall.SIGKILL)
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(FindProcesses(owner)) > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if left := FindProcesses(owner); len(left) > 0 {
			t.Errorf("processes left after cleanup: %+v", left)
		}
	})
	return owner
}

// newSupervisor creates a supervisor that is stopped when the test ends.
func newSupervisor(t *testing.T, owner string, opts Options) *Supervisor {
	t.Helper()
	s := New(owner, opts)
	t.Cleanup(s.StopAll)
	return s
}

func sleepSpec(name string) Spec {
	return Spec{Name: name, Path: "/bin/sleep", Args: []string{"60"}}
}

// shellSpec runs script with sh; $0 is a file the script may touch to say
// it is ready.
func shellSpec(t *testing.T, name, script string) (Spec, string) {
	ready := filepath.Join(t.TempDir(), "ready")
	return Spec{Name: name, Path: "/bin/sh", Args: []string{"-c", script, ready}}, ready
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitForFile(t *testing.T, path string) {
	t.Helper()
	waitFor(t, 5*time.Second, path, func() bool { _, err := os.Stat(path); return err == nil })
}

func mustEnsure(t *testing.T, s *Supervisor, spec Spec) Status {
	t.Helper()
	if err := s.Ensure(spec); err != nil {
		t.Fatalf("Ensure(%s): %v", spec.Name, err)
	}
	st, ok := s.Status(spec.Name)
	if !ok {
		t.Fatalf("Status(%s): unknown after Ensure", spec.Name)
	}
	return st
}

// found returns the processes of owner, sorted by name then PID.
// foundWhen polls found until cond holds (at most 5 s) and returns what it
// found last. Right after a start or a kill, /proc may briefly show a
// process that is still exec'ing or already dying; the callers' assertions
// then judge the settled state.
func foundWhen(owner string, cond func([]Found) bool) []Found {
	deadline := time.Now().Add(5 * time.Second)
	for {
		fs := found(owner)
		if cond(fs) || time.Now().After(deadline) {
			return fs
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func found(owner string) []Found {
	fs := FindProcesses(owner)
	sort.Slice(fs, func(i, j int) bool {
		if fs[i].Name != fs[j].Name {
			return fs[i].Name < fs[j].Name
		}
		return fs[i].PID < fs[j].PID
	})
	return fs
}

func foundNames(owner string) []string {
	var ns []string
	for _, f := range found(owner) {
		ns = append(ns, f.Name)
	}
	return ns
}

func startTime(t *testing.T, pid int) uint64 {
	t.Helper()
	st, _, ok := procStat(pid)
	if !ok {
		t.Fatalf("pid %d is not running", pid)
	}
	return st
}

// startLeftover starts a process by hand as an earlier lotse would have:
// own session, environment markers. It is reaped when it exits.
func startLeftover(t *testing.T, owner, name, hash string) int {
	t.Helper()
	cmd := exec.Command("/bin/sleep", "60")
	cmd.Env = []string{envOwner + "=" + owner, envName + "=" + name, envHash + "=" + hash}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	go func() { _ = cmd.Wait() }()
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	waitFor(t, 5*time.Second, "leftover to show up", func() bool {
		for _, f := range FindProcesses(owner) {
			if f.PID == pid {
				return true
			}
		}
		return false
	})
	return pid
}

// abandon makes a supervisor forget its processes without stopping them,
// as if lotse had been killed.
func abandon(s *Supervisor) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, p := range s.procs {
		close(p.quit)
		delete(s.procs, name)
	}
}

func TestEnsureStartsProcess(t *testing.T) {
	owner := testOwner(t)
	t.Setenv("LOTSE_TEST_SHOULD_NOT_LEAK", "1")
	var changes atomic.Int32
	opts := testOptions
	opts.OnChange = func(name string) {
		if name == "grp/sleeper" {
			changes.Add(1)
		}
	}
	s := newSupervisor(t, owner, opts)
	spec := sleepSpec("grp/sleeper")
	spec.Env = []string{"FOO=bar"}
	spec.Dir = t.TempDir()
	st := mustEnsure(t, s, spec)
	if !st.Running || st.PID <= 0 || st.Adopted || st.Restarts != 0 || st.LastExit != "" {
		t.Errorf("status after Ensure = %+v", st)
	}
	fs := foundWhen(owner, func(fs []Found) bool { return len(fs) == 1 && fs[0].PID == st.PID })
	if len(fs) != 1 {
		t.Fatalf("FindProcesses = %+v, want one process", fs)
	}
	if f := fs[0]; f.PID != st.PID || f.Name != spec.Name || f.SpecHash != spec.Hash() {
		t.Errorf("found %+v, want pid %d name %s hash %s", f, st.PID, spec.Name, spec.Hash())
	}
	if changes.Load() != 1 {
		t.Errorf("OnChange called %d times, want 1", changes.Load())
	}
	// Its own session, so signals to lotse's terminal do not reach it.
	if pgid, err := syscall.Getpgid(st.PID); err != nil || pgid != st.PID {
		t.Errorf("process group %d (%v), want its own (%d)", pgid, err, st.PID)
	}
	env, err := os.ReadFile("/proc/" + strconv.Itoa(st.PID) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	vars := strings.Split(string(env), "\x00")
	if !slices.Contains(vars, "FOO=bar") {
		t.Errorf("spec environment missing: %q", vars)
	}
	for _, v := range vars {
		if strings.HasPrefix(v, "LOTSE_TEST_SHOULD_NOT_LEAK=") {
			t.Errorf("supervisor leaked its own environment into the process: %s", v)
		}
	}
	if cwd, err := os.Readlink("/proc/" + strconv.Itoa(st.PID) + "/cwd"); err != nil || cwd != spec.Dir {
		t.Errorf("working directory %q (%v), want %s", cwd, err, spec.Dir)
	}
	if l := s.List("grp/"); len(l) != 1 || l[0].PID != st.PID {
		t.Errorf("List(grp/) = %+v", l)
	}
	if l := s.List("other/"); len(l) != 0 {
		t.Errorf("List(other/) = %+v, want none", l)
	}
}

func TestEnsureWritesLogFile(t *testing.T) {
	owner := testOwner(t)
	s := newSupervisor(t, owner, testOptions)
	logFile := filepath.Join(t.TempDir(), "logs", "p.log")
	spec := Spec{Name: "logger", Path: "/bin/sh", Args: []string{"-c", "echo out; echo err >&2; exec sleep 60"}, LogFile: logFile}
	mustEnsure(t, s, spec)
	waitFor(t, 5*time.Second, "log output", func() bool {
		data, _ := os.ReadFile(logFile)
		return strings.Contains(string(data), "out\n") && strings.Contains(string(data), "err\n")
	})
}

func TestEnsureRejectsBadSpecs(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
	}{
		{"no name", Spec{Path: "/bin/sleep", Args: []string{"60"}}},
		{"no path", Spec{Name: "x"}},
		{"missing binary", Spec{Name: "x", Path: "/nonexistent/lotse-test-binary"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			owner := testOwner(t)
			s := newSupervisor(t, owner, testOptions)
			if err := s.Ensure(tt.spec); err == nil {
				t.Fatal("Ensure succeeded")
			}
			if _, ok := s.Status(tt.spec.Name); ok {
				t.Error("a failed Ensure left the process registered")
			}
			if fs := found(owner); len(fs) != 0 {
				t.Errorf("processes running after a failed Ensure: %+v", fs)
			}
		})
	}
}

func TestEnsureSameSpecIsNoop(t *testing.T) {
	owner := testOwner(t)
	s := newSupervisor(t, owner, testOptions)
	spec := sleepSpec("noop")
	first := mustEnsure(t, s, spec)
	for i := 0; i < 3; i++ {
		// A copy with a different Tier still hashes the same.
		again := spec
		again.Args = append([]string{}, spec.Args...)
		again.Tier = i + 1
		st := mustEnsure(t, s, again)
		if st.PID != first.PID || st.Restarts != 0 || !st.Running {
			t.Fatalf("Ensure #%d with the same spec: status %+v, want pid %d untouched", i+2, st, first.PID)
		}
	}
	if fs := found(owner); len(fs) != 1 || fs[0].PID != first.PID {
		t.Errorf("FindProcesses = %+v, want only pid %d", fs, first.PID)
	}
}

func TestEnsureChangedSpecRestarts(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Spec, string)
	}{
		{"args", func(s *Spec, _ string) { s.Args = []string{"61"} }},
		{"env", func(s *Spec, _ string) { s.Env = []string{"A=1"} }},
		{"dir", func(s *Spec, dir string) { s.Dir = dir }},
		{"log file", func(s *Spec, dir string) { s.LogFile = filepath.Join(dir, "p.log") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			owner := testOwner(t)
			s := newSupervisor(t, owner, testOptions)
			spec := sleepSpec("changing")
			old := mustEnsure(t, s, spec)
			oldStart := startTime(t, old.PID)

			changed := spec
			tt.change(&changed, t.TempDir())
			if changed.Hash() == spec.Hash() {
				t.Fatal("test bug: the change does not change the hash")
			}
			st := mustEnsure(t, s, changed)
			if st.PID == old.PID || !st.Running {
				t.Fatalf("status after spec change = %+v, want a new running pid (old %d)", st, old.PID)
			}
			if alive(old.PID, oldStart) {
				t.Errorf("old pid %d still alive after the spec changed", old.PID)
			}
			fs := foundWhen(owner, func(fs []Found) bool { return len(fs) == 1 && fs[0].PID == st.PID && fs[0].SpecHash == changed.Hash() })
			if len(fs) != 1 || fs[0].PID != st.PID || fs[0].SpecHash != changed.Hash() {
				t.Errorf("FindProcesses = %+v, want only pid %d with hash %s", fs, st.PID, changed.Hash())
			}
		})
	}
}

func TestRestartAfterKill(t *testing.T) {
	owner := testOwner(t)
	var changes atomic.Int32
	opts := testOptions
	opts.OnChange = func(string) { changes.Add(1) }
	s := newSupervisor(t, owner, opts)
	spec := sleepSpec("victim")
	old := mustEnsure(t, s, spec)
	oldStart := startTime(t, old.PID)
	if err := syscall.Kill(old.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var st Status
	waitFor(t, 5*time.Second, "restart after SIGKILL", func() bool {
		st, _ = s.Status(spec.Name)
		return st.Running && st.PID != old.PID && st.Restarts == 1
	})
	if !strings.Contains(st.LastExit, "killed") {
		t.Errorf("LastExit = %q, want it to say the process was killed", st.LastExit)
	}
	if alive(old.PID, oldStart) {
		t.Error("old process still alive")
	}
	fs := foundWhen(owner, func(fs []Found) bool { return len(fs) == 1 && fs[0].PID == st.PID })
	if len(fs) != 1 || fs[0].PID != st.PID || fs[0].SpecHash != spec.Hash() {
		t.Errorf("FindProcesses = %+v, want only the restarted pid %d", fs, st.PID)
	}
	// start, exit, start again.
	if n := changes.Load(); n < 3 {
		t.Errorf("OnChange called %d times, want at least 3", n)
	}
}

func TestNewSupervisorAdopts(t *testing.T) {
	owner := testOwner(t)
	s1 := newSupervisor(t, owner, testOptions)
	spec := sleepSpec("cp/etcd")
	orig := mustEnsure(t, s1, spec)
	abandon(s1) // lotse is killed; its process keeps running

	log := &syncBuffer{}
	opts := testOptions
	opts.Log = log
	s2 := newSupervisor(t, owner, opts)
	if got := s2.Unclaimed(); !slices.Equal(got, []string{spec.Name}) {
		t.Errorf("Unclaimed() = %v, want [%s]", got, spec.Name)
	}
	st := mustEnsure(t, s2, spec)
	if st.PID != orig.PID || !st.Adopted || !st.Running {
		t.Fatalf("status = %+v, want adopted pid %d", st, orig.PID)
	}
	if got := s2.Unclaimed(); len(got) != 0 {
		t.Errorf("Unclaimed() = %v after Ensure, want none", got)
	}
	if fs := found(owner); len(fs) != 1 || fs[0].PID != orig.PID {
		t.Errorf("FindProcesses = %+v, want only pid %d", fs, orig.PID)
	}
	if !strings.Contains(log.String(), "adopted running pid "+strconv.Itoa(orig.PID)) {
		t.Errorf("log does not mention the adoption:\n%s", log)
	}

	// An adopted process that dies is restarted too.
	if err := syscall.Kill(orig.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 6*time.Second, "restart of the adopted process", func() bool {
		st, _ = s2.Status(spec.Name)
		return st.Running && st.PID != orig.PID && st.Restarts == 1
	})
	if st.Adopted {
		t.Error("a process the supervisor started itself is reported as adopted")
	}
	if fs := foundWhen(owner, func(fs []Found) bool { return len(fs) == 1 && fs[0].PID == st.PID }); len(fs) != 1 || fs[0].PID != st.PID {
		t.Errorf("FindProcesses = %+v, want only pid %d", fs, st.PID)
	}
}

func TestLeftovers(t *testing.T) {
	spec := sleepSpec("cp/apiserver")
	cur, stale := spec.Hash(), "0123456789abcdef"
	tests := []struct {
		name      string
		hashes    []string
		wantAdopt bool
	}{
		{"two current duplicates", []string{cur, cur}, true},
		{"stale and current", []string{stale, cur}, true},
		{"two stale", []string{stale, stale}, false},
		{"one stale", []string{stale}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			owner := testOwner(t)
			var pids []int
			var curPIDs []int
			for _, h := range tt.hashes {
				pid := startLeftover(t, owner, spec.Name, h)
				pids = append(pids, pid)
				if h == cur {
					curPIDs = append(curPIDs, pid)
				}
			}
			s := newSupervisor(t, owner, testOptions)
			st := mustEnsure(t, s, spec)
			fs := foundWhen(owner, func(fs []Found) bool { return len(fs) == 1 && fs[0].PID == st.PID })
			if len(fs) != 1 || fs[0].PID != st.PID || fs[0].Name != spec.Name {
				t.Fatalf("FindProcesses = %+v, want exactly one %s (pid %d)", fs, spec.Name, st.PID)
			}
			if fs[0].SpecHash != cur {
				t.Errorf("survivor has hash %s, want the current %s", fs[0].SpecHash, cur)
			}
			if st.Adopted != tt.wantAdopt {
				t.Errorf("Adopted = %t, want %t", st.Adopted, tt.wantAdopt)
			}
			if tt.wantAdopt && !slices.Contains(curPIDs, st.PID) {
				t.Errorf("adopted pid %d is not one of the current leftovers %v", st.PID, curPIDs)
			}
			if !tt.wantAdopt && slices.Contains(pids, st.PID) {
				t.Errorf("pid %d is a stale leftover", st.PID)
			}
		})
	}
}

func TestStopPrefix(t *testing.T) {
	owner := testOwner(t)
	leftover := startLeftover(t, owner, "a/unclaimed", "whatever")
	s := newSupervisor(t, owner, testOptions)
	pids := map[string]int{}
	for _, n := range []string{"a/1", "a/2", "ab/1", "b/1"} {
		pids[n] = mustEnsure(t, s, sleepSpec(n)).PID
	}
	s.StopPrefix("a/")
	if got, want := foundNames(owner), []string{"ab/1", "b/1"}; !slices.Equal(got, want) {
		t.Fatalf("running after StopPrefix(a/): %v, want %v", got, want)
	}
	for _, n := range []string{"a/1", "a/2"} {
		if _, ok := s.Status(n); ok {
			t.Errorf("Status(%s) still known after StopPrefix", n)
		}
	}
	for _, n := range []string{"ab/1", "b/1"} {
		st, ok := s.Status(n)
		if !ok || !st.Running || st.PID != pids[n] {
			t.Errorf("Status(%s) = %+v, %t; want untouched pid %d", n, st, ok, pids[n])
		}
	}
	if got := s.Unclaimed(); len(got) != 0 {
		t.Errorf("Unclaimed() = %v, want the stopped leftover gone", got)
	}
	if _, state, ok := procStat(leftover); ok && state != "Z" {
		t.Errorf("unclaimed leftover %d still running", leftover)
	}
	var names []string
	for _, st := range s.List("") {
		names = append(names, st.Name)
	}
	if want := []string{"ab/1", "b/1"}; !slices.Equal(names, want) {
		t.Errorf("List() = %v, want %v", names, want)
	}

	s.StopAll()
	if got := foundNames(owner); len(got) != 0 {
		t.Errorf("running after StopAll: %v", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := WaitStopped(ctx, owner, ""); err != nil {
		t.Errorf("WaitStopped after StopAll: %v", err)
	}
}

// termIgnoring is a process that ignores SIGTERM; it touches $0 once it does.
const termIgnoring = `trap '' TERM; touch "$0"; exec /bin/sleep 60`

func TestKillAndStopEscalate(t *testing.T) {
	tests := []struct {
		name             string
		stopTimeout      time.Duration
		stop             func(*Supervisor)
		minTook, maxTook time.Duration
	}{
		// KillPrefix does not wait for a graceful shutdown at all.
		{"KillPrefix", 3 * time.Second, func(s *Supervisor) { s.KillPrefix("k/") }, 0, 1500 * time.Millisecond},
		// StopPrefix waits StopTimeout, then kills.
		{"StopPrefix", 600 * time.Millisecond, func(s *Supervisor) { s.StopPrefix("k/") }, 500 * time.Millisecond, 2500 * time.Millisecond},
		// The processes' own StopTimeout (100 ms) wins over the
		// supervisor's (10 s).
		{"spec StopTimeout", 100 * time.Millisecond, func(s *Supervisor) { s.StopPrefix("k/") }, 0, 1200 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			owner := testOwner(t)
			opts := testOptions
			opts.StopTimeout = tt.stopTimeout
			s := newSupervisor(t, owner, opts)
			for _, n := range []string{"k/1", "k/2"} {
				spec, ready := shellSpec(t, n, termIgnoring)
				if tt.name == "spec StopTimeout" {
					s.opts.StopTimeout = 10 * time.Second // the spec's 100 ms must win
					spec.StopTimeout = 100 * time.Millisecond
				}
				mustEnsure(t, s, spec)
				waitForFile(t, ready)
			}
			mustEnsure(t, s, sleepSpec("keep"))
			start := time.Now()
			tt.stop(s)
			took := time.Since(start)
			if took < tt.minTook || took > tt.maxTook {
				t.Errorf("%s took %s, want between %s and %s", tt.name, took, tt.minTook, tt.maxTook)
			}
			if got := foundNames(owner); !slices.Equal(got, []string{"keep"}) {
				t.Errorf("running after %s: %v, want [keep]", tt.name, got)
			}
		})
	}
}

func TestStopAllByTier(t *testing.T) {
	owner := testOwner(t)
	log := &syncBuffer{}
	opts := testOptions
	opts.Log = log
	s := newSupervisor(t, owner, opts)
	// Higher tiers take a while to stop: if tiers were stopped together,
	// the fast etcd would report first.
	const slowStop = `trap 'sleep 0.3; exit 0' TERM; touch "$0"; while :; do sleep 0.05; done`
	procs := []struct {
		name string
		tier int
		slow bool
	}{
		{"c/etcd", 0, false},
		{"c/controller-manager", 2, true},
		{"c/apiserver", 1, true},
	}
	var readyFiles []string
	for _, p := range procs {
		spec := sleepSpec(p.name)
		if p.slow {
			var ready string
			spec, ready = shellSpec(t, p.name, slowStop)
			readyFiles = append(readyFiles, ready)
		}
		spec.Tier = p.tier
		mustEnsure(t, s, spec)
	}
	for _, f := range readyFiles {
		waitForFile(t, f)
	}

	s.StopAll()
	var order []string
	for _, line := range strings.Split(log.String(), "\n") {
		if name, _, ok := strings.Cut(strings.TrimPrefix(line, "supervisor: "), ": stopped in "); ok {
			order = append(order, name)
		}
	}
	if want := []string{"c/controller-manager", "c/apiserver", "c/etcd"}; !slices.Equal(order, want) {
		t.Errorf("stop order %v, want %v\nlog:\n%s", order, want, log)
	}
	if got := foundNames(owner); len(got) != 0 {
		t.Errorf("running after StopAll: %v", got)
	}
}

func TestLastExit(t *testing.T) {
	tests := []struct {
		name, script, want string
	}{
		{"exit 3", "exit 3", "exit status 3"},
		{"clean exit", "exit 0", "exited 0"},
		{"signal", "kill -TERM $$", "signal: terminated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			owner := testOwner(t)
			log := &syncBuffer{}
			opts := testOptions
			opts.Log = log
			s := newSupervisor(t, owner, opts)
			spec := Spec{Name: "crasher", Path: "/bin/sh", Args: []string{"-c", tt.script}}
			mustEnsure(t, s, spec)
			var st Status
			waitFor(t, 5*time.Second, "LastExit", func() bool {
				st, _ = s.Status(spec.Name)
				return st.LastExit != ""
			})
			if !strings.HasPrefix(st.LastExit, tt.want+" at ") {
				t.Errorf("LastExit = %q, want %q at <time>", st.LastExit, tt.want)
			}
			// A process that keeps exiting keeps being restarted (1s, then MaxBackoff).
			waitFor(t, 5*time.Second, "restarts", func() bool {
				st, _ = s.Status(spec.Name)
				return st.Restarts >= 2
			})
			if !strings.Contains(log.String(), "crasher: exited ("+tt.want) {
				t.Errorf("log does not report the exit:\n%s", log)
			}
		})
	}
}

func TestWaitStopped(t *testing.T) {
	owner := testOwner(t)
	s := newSupervisor(t, owner, testOptions)
	mustEnsure(t, s, sleepSpec("w/1"))
	// The process is found by its environment once it has exec'd; right
	// after the fork it still has the test's.
	waitFor(t, 5*time.Second, "w/1 findable", func() bool {
		for _, f := range FindProcesses(owner) {
			if f.Name == "w/1" {
				return true
			}
		}
		return false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := WaitStopped(ctx, owner, "w/")
	if err == nil || !strings.Contains(err.Error(), "1 processes still running") {
		t.Errorf("WaitStopped with a running process = %v", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if err := WaitStopped(ctx2, owner, "other/"); err != nil {
		t.Errorf("WaitStopped for another prefix = %v", err)
	}
}

func TestSpecHash(t *testing.T) {
	base := Spec{Name: "n", Path: "/bin/x", Args: []string{"a", "b"}, Env: []string{"A=1"}, Dir: "/d", LogFile: "/l", Tier: 1}
	tests := []struct {
		name     string
		change   func(*Spec)
		wantSame bool
	}{
		{"name", func(s *Spec) { s.Name = "m" }, true},
		{"tier", func(s *Spec) { s.Tier = 5 }, true},
		{"path", func(s *Spec) { s.Path = "/bin/y" }, false},
		{"args", func(s *Spec) { s.Args = []string{"a", "c"} }, false},
		{"arg boundaries", func(s *Spec) { s.Args = []string{"ab"} }, false},
		{"arg order", func(s *Spec) { s.Args = []string{"b", "a"} }, false},
		{"arg moved to env", func(s *Spec) { s.Args = []string{"a"}; s.Env = []string{"b", "A=1"} }, false},
		{"env", func(s *Spec) { s.Env = nil }, false},
		{"dir", func(s *Spec) { s.Dir = "/e" }, false},
		{"log file", func(s *Spec) { s.LogFile = "" }, false},
	}
	h := base.Hash()
	if len(h) != 16 {
		t.Errorf("hash %q has length %d, want 16", h, len(h))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base
			s.Args = append([]string{}, base.Args...)
			s.Env = append([]string{}, base.Env...)
			tt.change(&s)
			if same := s.Hash() == h; same != tt.wantSame {
				t.Errorf("hash unchanged = %t, want %t", same, tt.wantSame)
			}
		})
	}
}

func TestOwnerID(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	a := OwnerID(dir)
	tests := []struct {
		dir      string
		wantSame bool
	}{
		{dir, true},
		{".", true},
		{dir + "/", true},
		{filepath.Join(dir, "sub", ".."), true},
		{filepath.Join(dir, "sub"), false},
		{"/", false},
	}
	for i, tt := range tests {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			if same := OwnerID(tt.dir) == a; same != tt.wantSame {
				t.Errorf("OwnerID(%q) == OwnerID(%q) is %t, want %t", tt.dir, dir, same, tt.wantSame)
			}
		})
	}
	if len(a) != 16 {
		t.Errorf("OwnerID = %q, want 16 hex digits", a)
	}
}

// TestChildrenAreNotMistakenForTheProcess: children inherit the markers
// (containerd's shims do); only the supervised process itself is found, so
// adoption never takes a child for the process nor kills it as a duplicate.
func TestChildrenAreNotMistakenForTheProcess(t *testing.T) {
	owner := testOwner(t)
	s := newSupervisor(t, owner, Options{MaxBackoff: 200 * time.Millisecond, StopTimeout: 2 * time.Second})
	spec, ready := shellSpec(t, "parent", `sleep 60 & sleep 60 & touch "$0"; wait`)
	if err := s.Ensure(spec); err != nil {
		t.Fatal(err)
	}
	waitForFile(t, ready)
	found := FindProcesses(owner)
	if len(found) != 1 {
		t.Fatalf("found %d processes, want only the supervised one: %+v", len(found), found)
	}
	st, _ := s.Status("parent")
	if found[0].PID != st.PID {
		t.Errorf("found pid %d, supervised pid %d", found[0].PID, st.PID)
	}
	// A second supervisor adopts the parent and leaves its children alone.
	s2 := newSupervisor(t, owner, Options{MaxBackoff: 200 * time.Millisecond, StopTimeout: 2 * time.Second})
	if err := s2.Ensure(spec); err != nil {
		t.Fatal(err)
	}
	if st2, _ := s2.Status("parent"); !st2.Adopted || st2.PID != st.PID {
		t.Errorf("second supervisor: %+v, want the parent (pid %d) adopted", st2, st.PID)
	}
}

func TestRunningHash(t *testing.T) {
	owner := testOwner(t)
	s1 := newSupervisor(t, owner, testOptions)
	if h, ok := s1.RunningHash("cp/etcd-0"); ok {
		t.Fatalf("RunningHash of an unknown process = %q, true; want not found", h)
	}
	spec := sleepSpec("cp/etcd-0")
	mustEnsure(t, s1, spec)
	if h, ok := s1.RunningHash(spec.Name); !ok || h != spec.Hash() {
		t.Errorf("RunningHash = %q, %v; want %q, true", h, ok, spec.Hash())
	}
	abandon(s1) // lotse is killed; the process keeps running

	// A new supervisor knows the hash before anything claims the process,
	// so a rolling update can tell it is still on its old spec.
	s2 := newSupervisor(t, owner, testOptions)
	if h, ok := s2.RunningHash(spec.Name); !ok || h != spec.Hash() {
		t.Errorf("RunningHash of an unclaimed leftover = %q, %v; want %q, true", h, ok, spec.Hash())
	}
	changed := spec
	changed.Args = append([]string{}, spec.Args...)
	changed.Args[0] = "61"
	mustEnsure(t, s2, changed)
	if h, ok := s2.RunningHash(spec.Name); !ok || h != changed.Hash() {
		t.Errorf("RunningHash after the spec changed = %q, %v; want %q, true", h, ok, changed.Hash())
	}
}
