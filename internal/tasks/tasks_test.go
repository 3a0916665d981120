package tasks

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder notes the order in which tasks start and finish.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) index(e string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, x := range r.events {
		if x == e {
			return i
		}
	}
	return -1
}

func (r *recorder) count(e string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, x := range r.events {
		if x == e {
			n++
		}
	}
	return n
}

// doneTask succeeds at once and records its start and end.
func doneTask(rec *recorder, name string, deps ...string) Task {
	return Task{Name: name, DependsOn: deps, Run: func(context.Context) (bool, string, error) {
		rec.add("start " + name)
		rec.add("end " + name)
		return true, "", nil
	}}
}

func TestRunDependencyOrder(t *testing.T) {
	rec := &recorder{}
	// Given in reverse order on purpose: Run must follow the graph, not the slice.
	ts := []Task{
		doneTask(rec, "d", "b", "c"),
		doneTask(rec, "c", "a"),
		doneTask(rec, "b", "a"),
		doneTask(rec, "a"),
	}
	res, err := Run(context.Background(), ts)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, edge := range [][2]string{{"a", "b"}, {"a", "c"}, {"b", "d"}, {"c", "d"}} {
		before, after := rec.index("end "+edge[0]), rec.index("start "+edge[1])
		if before < 0 || after < 0 || before > after {
			t.Errorf("%s must finish before %s starts; events %v", edge[0], edge[1], rec.events)
		}
	}
	for _, n := range []string{"a", "b", "c", "d"} {
		if c := rec.count("start " + n); c != 1 {
			t.Errorf("task %s ran %d times, want 1", n, c)
		}
	}
	// Results keep the order the tasks were given in.
	var names []string
	for _, r := range res {
		names = append(names, r.Name)
		if r.State != Succeeded {
			t.Errorf("task %s state %q, want %q", r.Name, r.State, Succeeded)
		}
	}
	if got := strings.Join(names, ","); got != "d,c,b,a" {
		t.Errorf("result order %s, want d,c,b,a", got)
	}
	if !res.Done() {
		t.Error("Done() = false after every task succeeded")
	}
	if got := res.Describe(); got != "all tasks succeeded" {
		t.Errorf("Describe() = %q", got)
	}
}

func TestRunWaveIsConcurrent(t *testing.T) {
	// Three independent tasks each wait until all three have started: this
	// only finishes if they run at the same time.
	const n = 3
	var started sync.WaitGroup
	started.Add(n)
	allStarted := make(chan struct{})
	go func() { started.Wait(); close(allStarted) }()
	var ts []Task
	for _, name := range []string{"x", "y", "z"} {
		ts = append(ts, Task{Name: name, Run: func(ctx context.Context) (bool, string, error) {
			started.Done()
			select {
			case <-allStarted:
				return true, "", nil
			case <-time.After(5 * time.Second):
				return false, "", errors.New("other tasks of the wave did not start concurrently")
			}
		}})
	}
	res, err := Run(context.Background(), ts)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !res.Done() {
		t.Fatalf("wave did not run concurrently: %s", res.Describe())
	}
}

func TestRunNotDoneBlocksDependents(t *testing.T) {
	rec := &recorder{}
	ts := []Task{
		doneTask(rec, "certs"),
		{Name: "etcd", DependsOn: []string{"certs"}, Run: func(context.Context) (bool, string, error) {
			rec.add("start etcd")
			return false, "waiting for etcd to be healthy", nil
		}},
		doneTask(rec, "apiserver", "etcd"),
		doneTask(rec, "scheduler", "apiserver"),
		doneTask(rec, "addons", "certs"),
	}
	res, err := Run(context.Background(), ts)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := map[string]string{
		"certs":     Succeeded,
		"etcd":      Processing,
		"apiserver": Pending,
		"scheduler": Pending,
		"addons":    Succeeded,
	}
	for _, r := range res {
		if r.State != want[r.Name] {
			t.Errorf("task %s state %q, want %q", r.Name, r.State, want[r.Name])
		}
	}
	if rec.index("start apiserver") >= 0 || rec.index("start scheduler") >= 0 {
		t.Errorf("dependents of a not-done task ran: %v", rec.events)
	}
	if res.Done() {
		t.Error("Done() = true with a task in progress")
	}
	if got, want := res.Describe(), "task etcd: waiting for etcd to be healthy"; got != want {
		t.Errorf("Describe() = %q, want %q", got, want)
	}
	if _, ok := res.FirstError(); ok {
		t.Error("FirstError() reported an error although no task failed")
	}
}

func TestRunError(t *testing.T) {
	rec := &recorder{}
	ts := []Task{
		doneTask(rec, "a"),
		{Name: "b", DependsOn: []string{"a"}, Run: func(context.Context) (bool, string, error) {
			return true, "ignored", errors.New("disk full")
		}},
		doneTask(rec, "c", "b"),
		{Name: "d", Run: func(context.Context) (bool, string, error) {
			return false, "still going", nil
		}},
	}
	res, err := Run(context.Background(), ts)
	if err != nil {
		t.Fatalf("Run returned an error for a failing task (it belongs in the results): %v", err)
	}
	byName := map[string]Result{}
	for _, r := range res {
		byName[r.Name] = r
	}
	if r := byName["b"]; r.State != Error || r.Message != "disk full" {
		t.Errorf("failing task result %+v, want state %s with message %q", r, Error, "disk full")
	}
	if r := byName["c"]; r.State != Pending {
		t.Errorf("dependent of failed task has state %q, want %q", r.State, Pending)
	}
	if rec.index("start c") >= 0 {
		t.Error("dependent of a failed task ran")
	}
	first, ok := res.FirstError()
	if !ok || first.Name != "b" {
		t.Errorf("FirstError() = %+v, %t; want task b", first, ok)
	}
	// An error takes precedence over a task in progress.
	d := res.Describe()
	if !strings.Contains(d, "b") || !strings.Contains(d, "disk full") || !strings.Contains(d, "failed") {
		t.Errorf("Describe() = %q, want it to name task b and its error", d)
	}
}

func TestDescribe(t *testing.T) {
	tests := []struct {
		name string
		rs   Results
		want string
	}{
		{"empty", nil, "all tasks succeeded"},
		{"all done", Results{{Name: "a", State: Succeeded}}, "all tasks succeeded"},
		{"processing without message", Results{{Name: "a", State: Succeeded}, {Name: "b", State: Processing}}, "task b in progress"},
		{"processing with message", Results{{Name: "b", State: Processing, Message: "waiting"}}, "task b: waiting"},
		{"only pending", Results{{Name: "a", State: Pending}}, "waiting for dependencies"},
		{"error wins", Results{{Name: "a", State: Processing, Message: "x"}, {Name: "b", State: Error, Message: "boom"}}, "task b failed: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.rs.Describe(); got != tt.want {
				t.Errorf("Describe() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestProgress(t *testing.T) {
	s := func(states ...string) Results {
		var rs Results
		for i, st := range states {
			rs = append(rs, Result{Name: string(rune('a' + i)), State: st})
		}
		return rs
	}
	tests := []struct {
		name string
		rs   Results
		want int32
	}{
		{"no tasks", nil, 100},
		{"none succeeded", s(Pending, Processing), 0},
		{"one of two", s(Succeeded, Pending), 50},
		{"one of three rounds down", s(Succeeded, Error, Pending), 33},
		{"two of three rounds down", s(Succeeded, Succeeded, Processing), 66},
		{"three of four", s(Succeeded, Succeeded, Succeeded, Error), 75},
		{"all", s(Succeeded, Succeeded, Succeeded), 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.rs.Progress(); got != tt.want {
				t.Errorf("Progress() = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	noop := func(context.Context) (bool, string, error) { return true, "", nil }
	task := func(name string, deps ...string) Task { return Task{Name: name, DependsOn: deps, Run: noop} }
	tests := []struct {
		name    string
		tasks   []Task
		wantErr string // substring; empty means valid
	}{
		{"empty", nil, ""},
		{"diamond", []Task{task("a"), task("b", "a"), task("c", "a"), task("d", "b", "c")}, ""},
		{"duplicate", []Task{task("a"), task("b"), task("a")}, `task "a" defined twice`},
		{"unknown dependency", []Task{task("a"), task("b", "nope")}, `task "b" depends on unknown task "nope"`},
		{"self cycle", []Task{task("a", "a")}, "dependency cycle"},
		{"three cycle", []Task{task("a", "c"), task("b", "a"), task("c", "b"), task("d")}, "dependency cycle"},
		{"cycle behind a valid root", []Task{task("root"), task("x", "root", "y"), task("y", "x")}, "dependency cycle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.tasks)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate error = %v, want one containing %q", err, tt.wantErr)
			}
			// Run refuses an invalid graph without running anything.
			ran := false
			ts := append([]Task(nil), tt.tasks...)
			for i := range ts {
				ts[i].Run = func(context.Context) (bool, string, error) { ran = true; return true, "", nil }
			}
			if res, err := Run(context.Background(), ts); err == nil || res != nil {
				t.Errorf("Run on invalid graph = %v, %v; want nil results and an error", res, err)
			}
			if ran {
				t.Error("Run ran a task of an invalid graph")
			}
		})
	}
}

func TestRunPassesContext(t *testing.T) {
	type key struct{}
	ctx := context.WithValue(context.Background(), key{}, "v")
	res, err := Run(ctx, []Task{{Name: "a", Run: func(ctx context.Context) (bool, string, error) {
		if ctx.Value(key{}) != "v" {
			return false, "", errors.New("context not passed through")
		}
		return true, "", nil
	}}})
	if err != nil || !res.Done() {
		t.Fatalf("Run = %v, %v", res, err)
	}
}
