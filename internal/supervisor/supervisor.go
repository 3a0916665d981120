// Package supervisor runs long-lived processes (etcd, kube-apiserver, ...),
// restarts them with backoff when they die, and adopts the ones an earlier
// lotse started, so killing lotse at any moment and starting it again never
// orphans or duplicates a process.
//
// Processes run in their own session: they outlive lotse on purpose. Every
// process carries environment markers (owner, name, spec hash); on start the
// supervisor scans /proc for them instead of trusting PID files, which a
// crash could leave stale or unwritten.
package supervisor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Spec describes a process.
type Spec struct {
	// Name identifies the process among all of this owner's; slashes group
	// processes ("cluster/ns/name/etcd-0") so StopPrefix can stop a group.
	Name    string
	Path    string
	Args    []string
	Env     []string
	Dir     string
	LogFile string
	// Tier orders stopping: higher tiers stop first, so clients (API
	// servers) go before what they depend on (etcd) and shut down cleanly.
	Tier int
	// StopTimeout, if set, replaces the supervisor's for this process:
	// how long it gets after SIGTERM before SIGKILL. Not part of the hash.
	StopTimeout time.Duration
}

// Hash identifies the spec: a process is restarted when its hash changes.
func (s Spec) Hash() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00", s.Path, s.Dir, s.LogFile)
	for _, a := range s.Args {
		fmt.Fprintf(h, "a:%s\x00", a)
	}
	for _, e := range s.Env {
		fmt.Fprintf(h, "e:%s\x00", e)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Status is what the supervisor knows about a process.
type Status struct {
	Name     string
	Running  bool
	PID      int
	Restarts int
	// LastExit describes the last time the process ended, if it did.
	LastExit string
	Adopted  bool
}

// Options tune a Supervisor.
type Options struct {
	// OnChange is called (without locks held) when a process starts or exits.
	OnChange func(name string)
	// Log receives one line per notable event.
	Log io.Writer
	// MaxBackoff caps the delay between restarts (default 30s).
	MaxBackoff time.Duration
	// StopTimeout is how long a process gets after SIGTERM (default 15s).
	StopTimeout time.Duration
}

// Supervisor keeps a set of processes running.
type Supervisor struct {
	owner string
	opts  Options

	mu    sync.Mutex
	procs map[string]*proc
	// found are processes of this owner that were running when the
	// supervisor started and that nobody has claimed yet.
	found map[string][]Found
}

type proc struct {
	spec Spec
	hash string

	// guarded by Supervisor.mu
	pid       int
	startTime uint64
	running   bool
	adopted   bool
	restarts  int
	lastExit  string

	quit chan struct{} // closed to end supervision
	done chan struct{} // closed when the supervision loop returned
}

// OwnerID derives a stable owner id from a state directory, so two lotse
// instances with different state directories never touch each other's
// processes.
func OwnerID(stateDir string) string {
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		abs = stateDir
	}
	sum := sha256.Sum256([]byte(abs))
	return hex.EncodeToString(sum[:8])
}

// New creates a supervisor and takes note of the processes an earlier one
// with the same owner left running.
func New(owner string, opts Options) *Supervisor {
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	if opts.StopTimeout == 0 {
		opts.StopTimeout = 15 * time.Second
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	s := &Supervisor{owner: owner, opts: opts, procs: map[string]*proc{}, found: map[string][]Found{}}
	for _, f := range FindProcesses(owner) {
		s.found[f.Name] = append(s.found[f.Name], f)
	}
	return s
}

// Owner returns the supervisor's owner id.
func (s *Supervisor) Owner() string { return s.owner }

func (s *Supervisor) logf(format string, args ...any) {
	fmt.Fprintf(s.opts.Log, "supervisor: "+format+"\n", args...)
}

// Ensure makes the process described by spec run. It is idempotent: an
// unchanged spec is a no-op; a changed spec restarts the process; a process
// left by an earlier supervisor with the same spec is adopted.
func (s *Supervisor) Ensure(spec Spec) error {
	if spec.Name == "" || spec.Path == "" {
		return fmt.Errorf("supervisor: spec needs a name and a path")
	}
	hash := spec.Hash()
	s.mu.Lock()
	if p, ok := s.procs[spec.Name]; ok {
		if p.hash == hash {
			p.spec.Tier, p.spec.StopTimeout = spec.Tier, spec.StopTimeout // not part of the hash: no restart needed
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		s.logf("%s: spec changed, restarting", spec.Name)
		s.Stop(spec.Name)
		s.mu.Lock()
	}
	candidates := s.found[spec.Name]
	delete(s.found, spec.Name)
	p := &proc{spec: spec, hash: hash, quit: make(chan struct{}), done: make(chan struct{})}
	var adopt *Found
	var extra []Found
	for i := range candidates {
		c := candidates[i]
		if adopt == nil && c.SpecHash == hash && alive(c.PID, c.StartTime) {
			adopt = &c
			continue
		}
		extra = append(extra, c)
	}
	s.procs[spec.Name] = p
	s.mu.Unlock()

	// Leftovers with an old spec, or duplicates, must go before we start.
	for _, e := range extra {
		s.logf("%s: stopping leftover pid %d", spec.Name, e.PID)
		s.terminate(e.PID, e.StartTime, s.opts.StopTimeout)
	}
	if adopt != nil {
		s.mu.Lock()
		p.pid, p.startTime, p.running, p.adopted = adopt.PID, adopt.StartTime, true, true
		s.mu.Unlock()
		s.logf("%s: adopted running pid %d", spec.Name, adopt.PID)
		go s.supervise(p, s.watchAdopted(p, adopt.PID, adopt.StartTime))
		return nil
	}
	exited, err := s.start(p)
	if err != nil {
		s.mu.Lock()
		delete(s.procs, spec.Name)
		s.mu.Unlock()
		close(p.done)
		return err
	}
	go s.supervise(p, exited)
	return nil
}

// start launches the process and returns a channel closed when it exits.
func (s *Supervisor) start(p *proc) (<-chan struct{}, error) {
	spec := p.spec
	var out io.Writer = io.Discard
	var logFile *os.File
	if spec.LogFile != "" {
		if err := os.MkdirAll(filepath.Dir(spec.LogFile), 0o755); err != nil {
			return nil, err
		}
		rotateIfLarge(spec.LogFile, 20<<20)
		f, err := os.OpenFile(spec.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return nil, err
		}
		logFile = f
		out = f
	}
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Dir = spec.Dir
	cmd.Env = append(append(os.Environ()[:0:0], baseEnv()...), spec.Env...)
	cmd.Env = append(cmd.Env, envOwner+"="+s.owner, envName+"="+spec.Name, envHash+"="+p.hash)
	cmd.Stdout = out
	cmd.Stderr = out
	// A session of its own: the process survives lotse and a Ctrl-C in
	// lotse's terminal does not reach it; lotse stops it deliberately.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err := cmd.Start()
	if logFile != nil {
		logFile.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	st, _, _ := procStat(cmd.Process.Pid)
	s.mu.Lock()
	p.pid, p.startTime, p.running, p.adopted = cmd.Process.Pid, st, true, false
	s.mu.Unlock()
	s.logf("%s: started pid %d", spec.Name, cmd.Process.Pid)
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		s.mu.Lock()
		p.running = false
		if err != nil {
			p.lastExit = fmt.Sprintf("%s at %s", err, time.Now().Format(time.RFC3339))
		} else {
			p.lastExit = "exited 0 at " + time.Now().Format(time.RFC3339)
		}
		s.mu.Unlock()
		close(exited)
	}()
	s.changed(spec.Name)
	return exited, nil
}

// watchAdopted polls a process we did not start (we cannot wait for it).
func (s *Supervisor) watchAdopted(p *proc, pid int, startTime uint64) <-chan struct{} {
	exited := make(chan struct{})
	go func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.quit:
				return
			case <-t.C:
				if !alive(pid, startTime) {
					s.mu.Lock()
					p.running = false
					p.lastExit = "adopted process ended at " + time.Now().Format(time.RFC3339)
					s.mu.Unlock()
					close(exited)
					return
				}
			}
		}
	}()
	return exited
}

// supervise restarts the process whenever it exits, with exponential backoff
// that resets after the process ran for a while.
func (s *Supervisor) supervise(p *proc, exited <-chan struct{}) {
	defer close(p.done)
	backoff := time.Second
	started := time.Now()
	for {
		select {
		case <-p.quit:
			return
		case <-exited:
		}
		s.mu.Lock()
		last := p.lastExit
		s.mu.Unlock()
		s.logf("%s: exited (%s)", p.spec.Name, last)
		s.changed(p.spec.Name)
		if time.Since(started) > 2*time.Minute {
			backoff = time.Second
		}
		select {
		case <-p.quit:
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, s.opts.MaxBackoff)
		for {
			var err error
			exited, err = s.start(p)
			if err == nil {
				break
			}
			s.logf("%s: restart failed: %v", p.spec.Name, err)
			select {
			case <-p.quit:
				return
			case <-time.After(backoff):
			}
		}
		started = time.Now()
		s.mu.Lock()
		p.restarts++
		s.mu.Unlock()
	}
}

func (s *Supervisor) changed(name string) {
	s.mu.Lock()
	f := s.opts.OnChange
	s.mu.Unlock()
	if f != nil {
		f(name)
	}
}

// RunningHash returns the spec hash the process of this name runs with:
// the supervised one's, or that of a process an earlier supervisor left
// which nobody has claimed yet. ok is false when no process of that name is
// known. Rolling updates use it to tell instances still on an old spec
// from new ones, also right after lotse restarted.
func (s *Supervisor) RunningHash(name string) (hash string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, found := s.procs[name]; found {
		return p.hash, true
	}
	for _, f := range s.found[name] {
		if alive(f.PID, f.StartTime) {
			return f.SpecHash, true
		}
	}
	return "", false
}

// SetOnChange replaces the hook called when a process starts or exits.
func (s *Supervisor) SetOnChange(f func(name string)) {
	s.mu.Lock()
	s.opts.OnChange = f
	s.mu.Unlock()
}

// Stop ends supervision of a process and terminates it (SIGTERM, then
// SIGKILL). It also terminates any process of the same name the supervisor
// has not adopted, so nothing of that name is left running.
func (s *Supervisor) Stop(name string) {
	s.stopMatching(func(n string) bool { return n == name }, s.opts.StopTimeout)
}

// StopPrefix stops every process whose name starts with prefix.
func (s *Supervisor) StopPrefix(prefix string) {
	s.stopMatching(func(n string) bool { return strings.HasPrefix(n, prefix) }, s.opts.StopTimeout)
}

// StopAll stops every process of this owner.
func (s *Supervisor) StopAll() {
	s.stopMatching(func(string) bool { return true }, s.opts.StopTimeout)
}

// KillPrefix ends every process whose name starts with prefix at once
// (SIGKILL), for when its data is about to be deleted anyway and a graceful
// shutdown would only cost time.
func (s *Supervisor) KillPrefix(prefix string) {
	s.stopMatching(func(n string) bool { return strings.HasPrefix(n, prefix) }, 0)
}

func (s *Supervisor) stopMatching(match func(string) bool, timeout time.Duration) {
	s.mu.Lock()
	var ps []*proc
	for name, p := range s.procs {
		if match(name) {
			ps = append(ps, p)
			delete(s.procs, name)
		}
	}
	for name := range s.found {
		if match(name) {
			delete(s.found, name)
		}
	}
	s.mu.Unlock()

	sort.Slice(ps, func(i, j int) bool { return ps[i].spec.Tier > ps[j].spec.Tier })
	var wg sync.WaitGroup
	for i := 0; i < len(ps); {
		j := i
		for j < len(ps) && ps[j].spec.Tier == ps[i].spec.Tier {
			j++
		}
		for _, p := range ps[i:j] {
			wg.Add(1)
			go func(p *proc) {
				defer wg.Done()
				start := time.Now()
				close(p.quit)
				<-p.done
				s.mu.Lock()
				pid, st := p.pid, p.startTime
				s.mu.Unlock()
				t := timeout
				if p.spec.StopTimeout > 0 && timeout > 0 {
					t = min(t, p.spec.StopTimeout)
				}
				s.terminate(pid, st, t)
				s.logf("%s: stopped in %s", p.spec.Name, time.Since(start).Round(time.Millisecond))
			}(p)
		}
		wg.Wait()
		i = j
	}
	// Whatever still carries a matching marker (left by an earlier lotse,
	// or started in a race) goes too.
	for _, f := range FindProcesses(s.owner) {
		if match(f.Name) {
			wg.Add(1)
			go func(f Found) { defer wg.Done(); s.terminate(f.PID, f.StartTime, timeout) }(f)
		}
	}
	wg.Wait()
}

// terminate sends SIGTERM to the process group, waits, then SIGKILLs.
func (s *Supervisor) terminate(pid int, startTime uint64, timeout time.Duration) {
	if pid <= 0 || !alive(pid, startTime) {
		return
	}
	if timeout > 0 {
		signalGroup(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !alive(pid, startTime) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	signalGroup(pid, syscall.SIGKILL)
	for i := 0; i < 100 && alive(pid, startTime); i++ {
		time.Sleep(50 * time.Millisecond)
	}
}

// Status returns the status of a process; ok is false if it is unknown.
func (s *Supervisor) Status(name string) (Status, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.procs[name]
	if !ok {
		return Status{Name: name}, false
	}
	return Status{Name: name, Running: p.running, PID: p.pid, Restarts: p.restarts, LastExit: p.lastExit, Adopted: p.adopted}, true
}

// List returns the status of every supervised process whose name starts with prefix.
func (s *Supervisor) List(prefix string) []Status {
	s.mu.Lock()
	names := make([]string, 0, len(s.procs))
	for n := range s.procs {
		if strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
	}
	s.mu.Unlock()
	sort.Strings(names)
	out := make([]Status, 0, len(names))
	for _, n := range names {
		if st, ok := s.Status(n); ok {
			out = append(out, st)
		}
	}
	return out
}

// Unclaimed lists processes found at start that no Ensure has claimed: what
// an earlier lotse left for objects that may no longer exist.
func (s *Supervisor) Unclaimed() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n := range s.found {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// WaitStopped blocks until no process of this owner whose name starts with
// prefix is alive, or ctx ends.
func WaitStopped(ctx context.Context, owner, prefix string) error {
	for {
		left := 0
		for _, f := range FindProcesses(owner) {
			if strings.HasPrefix(f.Name, prefix) {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d processes still running: %w", left, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// baseEnv is the environment every supervised process gets: a PATH and
// nothing else of lotse's own environment, so a process behaves the same
// whoever started lotse.
func baseEnv() []string {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if home := os.Getenv("HOME"); home != "" {
		env = append(env, "HOME="+home)
	}
	return env
}

func rotateIfLarge(path string, limit int64) {
	if fi, err := os.Stat(path); err == nil && fi.Size() > limit {
		_ = os.Rename(path, path+".1")
	}
}
