// Package tasks runs a graph of named, idempotent tasks. A reconciler builds
// the graph each time it runs; a task runs once all tasks it depends on have
// succeeded, so the results say exactly how far a cluster has come and what
// it waits for. Tasks without a dependency between them run concurrently.
package tasks

import (
	"context"
	"fmt"
	"sort"
	"sync"
)

// States of a task after a run.
const (
	Pending    = "Pending"    // a dependency has not succeeded yet
	Processing = "Processing" // ran, but is not done yet (e.g. waiting for readiness)
	Succeeded  = "Succeeded"
	Error      = "Error"
)

// Task is one named step.
type Task struct {
	Name      string
	DependsOn []string
	// Run does the step. done=false with a nil error means "in progress, look
	// again later"; message then says what it waits for.
	Run func(ctx context.Context) (done bool, message string, err error)
}

// Result is the outcome of one task.
type Result struct {
	Name    string
	State   string
	Message string
}

// Results of a graph run, in the order the tasks were given.
type Results []Result

// Done reports whether every task succeeded.
func (rs Results) Done() bool {
	for _, r := range rs {
		if r.State != Succeeded {
			return false
		}
	}
	return true
}

// Progress is the percentage of succeeded tasks.
func (rs Results) Progress() int32 {
	if len(rs) == 0 {
		return 100
	}
	n := 0
	for _, r := range rs {
		if r.State == Succeeded {
			n++
		}
	}
	return int32(n * 100 / len(rs))
}

// FirstError returns the first failed task, if any.
func (rs Results) FirstError() (Result, bool) {
	for _, r := range rs {
		if r.State == Error {
			return r, true
		}
	}
	return Result{}, false
}

// Describe says in one line what the run waits for.
func (rs Results) Describe() string {
	if r, ok := rs.FirstError(); ok {
		return fmt.Sprintf("task %s failed: %s", r.Name, r.Message)
	}
	for _, r := range rs {
		if r.State == Processing {
			if r.Message != "" {
				return fmt.Sprintf("task %s: %s", r.Name, r.Message)
			}
			return "task " + r.Name + " in progress"
		}
	}
	if rs.Done() {
		return "all tasks succeeded"
	}
	return "waiting for dependencies"
}

// Validate checks that names are unique and dependencies exist and form no cycle.
func Validate(ts []Task) error {
	byName := map[string]Task{}
	for _, t := range ts {
		if _, dup := byName[t.Name]; dup {
			return fmt.Errorf("task %q defined twice", t.Name)
		}
		byName[t.Name] = t
	}
	state := map[string]int{} // 0 new, 1 visiting, 2 done
	var visit func(string) error
	visit = func(n string) error {
		switch state[n] {
		case 1:
			return fmt.Errorf("dependency cycle through task %q", n)
		case 2:
			return nil
		}
		state[n] = 1
		for _, d := range byName[n].DependsOn {
			if _, ok := byName[d]; !ok {
				return fmt.Errorf("task %q depends on unknown task %q", n, d)
			}
			if err := visit(d); err != nil {
				return err
			}
		}
		state[n] = 2
		return nil
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := visit(n); err != nil {
			return err
		}
	}
	return nil
}

// Run executes the graph once, in waves: every task whose dependencies all
// succeeded runs (concurrently with the others of its wave); a task that is
// not done blocks its dependents until the next Run.
func Run(ctx context.Context, ts []Task) (Results, error) {
	if err := Validate(ts); err != nil {
		return nil, err
	}
	res := map[string]Result{}
	for {
		var wave []Task
		for _, t := range ts {
			if _, ran := res[t.Name]; ran {
				continue
			}
			ready := true
			for _, d := range t.DependsOn {
				if r, ok := res[d]; !ok || r.State != Succeeded {
					ready = false
					break
				}
			}
			if ready {
				wave = append(wave, t)
			}
		}
		if len(wave) == 0 {
			break
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, t := range wave {
			wg.Add(1)
			go func(t Task) {
				defer wg.Done()
				r := Result{Name: t.Name}
				done, msg, err := t.Run(ctx)
				switch {
				case err != nil:
					r.State, r.Message = Error, err.Error()
				case done:
					r.State = Succeeded
				default:
					r.State, r.Message = Processing, msg
				}
				mu.Lock()
				res[t.Name] = r
				mu.Unlock()
			}(t)
		}
		wg.Wait()
	}
	out := make(Results, 0, len(ts))
	for _, t := range ts {
		r, ok := res[t.Name]
		if !ok {
			r = Result{Name: t.Name, State: Pending}
		}
		out = append(out, r)
	}
	return out, nil
}
