package process

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/supervisor"
)

func TestPickReplacement(t *testing.T) {
	h := func(ok ...bool) []controlplane.ComponentHealth {
		out := make([]controlplane.ComponentHealth, len(ok))
		for i, v := range ok {
			out[i] = controlplane.ComponentHealth{Name: fmt.Sprintf("etcd-%d", i), Healthy: v}
		}
		return out
	}
	tests := []struct {
		name     string
		stale    []int
		health   []controlplane.ComponentHealth
		last     int
		want     int
		wantSick []string
	}{
		{"all healthy: the first stale one", []int{1, 2}, h(true, true, true), -1, 1, nil},
		{"all healthy: the leader last", []int{0, 1, 2}, h(true, true, true), 0, 1, nil},
		{"only the leader is left: now it", []int{0}, h(true, true, true), 0, 0, nil},
		{"the leader is down anyway: that one", []int{0, 1}, h(false, true, true), 0, 0, nil},
		{"a stale one is down anyway: that one", []int{0, 2}, h(true, true, false), -1, 2, nil},
		{"an updated one is not healthy yet: wait", []int{1, 2}, h(false, true, true), 2, -1, []string{"etcd-0"}},
		{"single instance", []int{0}, h(true), -1, 0, nil},
		{"single instance down", []int{0}, h(false), 0, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, sick := pickReplacement(tt.stale, tt.health, tt.last)
			if got != tt.want || !slices.Equal(sick, tt.wantSick) {
				t.Errorf("pickReplacement = %d, %v; want %d, %v", got, sick, tt.want, tt.wantSick)
			}
		})
	}
}

// TestRolloutOneAtATime replaces three running processes whose spec
// changed: one per call, never while one is unhealthy, none while the gate
// is closed, and nothing once all run the new spec.
func TestRolloutOneAtATime(t *testing.T) {
	dir := t.TempDir()
	sup := supervisor.New(supervisor.OwnerID(dir), supervisor.Options{})
	t.Cleanup(sup.StopAll)
	b := &Backend{StateDir: dir, Supervisor: sup}
	specs := func(arg string) []supervisor.Spec {
		var out []supervisor.Spec
		for i := 0; i < 3; i++ {
			out = append(out, supervisor.Spec{Name: fmt.Sprintf("c/x-%d", i), Path: "/bin/sleep", Args: []string{arg}})
		}
		return out
	}
	ctx := context.Background()
	healthy := []bool{true, true, true}
	health := func(context.Context) []controlplane.ComponentHealth {
		var out []controlplane.ComponentHealth
		for i, ok := range healthy {
			out = append(out, controlplane.ComponentHealth{Name: fmt.Sprintf("x-%d", i), Healthy: ok})
		}
		return out
	}
	pid := func(i int) int { st, _ := sup.Status(fmt.Sprintf("c/x-%d", i)); return st.PID }

	// A new component starts everything at once.
	done, msg, err := b.rollout(ctx, "x", specs("60"), health, "", nil)
	if err != nil || !done {
		t.Fatalf("first rollout = %v, %q, %v; want done", done, msg, err)
	}
	before := []int{pid(0), pid(1), pid(2)}

	next := specs("61")
	if done, msg, _ := b.rollout(ctx, "x", next, health, "waiting for etcd to be updated first", nil); done || !strings.Contains(msg, "waiting for etcd") {
		t.Fatalf("rollout with a closed gate = %v, %q", done, msg)
	}
	if got := []int{pid(0), pid(1), pid(2)}; !slices.Equal(got, before) {
		t.Fatalf("a closed gate replaced processes: pids %v -> %v", before, got)
	}

	for step := 0; step < 3; step++ {
		done, msg, err := b.rollout(ctx, "x", next, health, "", nil)
		if err != nil || done {
			t.Fatalf("step %d: rollout = %v, %q, %v; want one replacement", step, done, msg, err)
		}
		var replaced []int
		for i := range 3 {
			if pid(i) != before[i] {
				replaced = append(replaced, i)
			}
		}
		if len(replaced) != step+1 {
			t.Fatalf("step %d: replaced %v, want %d instances (%q)", step, replaced, step+1, msg)
		}
		// The new instance is not healthy yet: nothing else moves. (After
		// the last one every instance runs its spec; the caller's health
		// check takes over.)
		healthy[step] = false
		if _, msg, _ := b.rollout(ctx, "x", next, health, "", nil); step < 2 && !strings.Contains(msg, fmt.Sprintf("waiting for x-%d", step)) {
			t.Errorf("step %d: rollout while x-%d is unhealthy says %q", step, step, msg)
		}
		for i := step + 1; i < 3; i++ {
			if pid(i) != before[i] {
				t.Fatalf("step %d: x-%d replaced while x-%d was unhealthy", step, i, step)
			}
		}
		healthy[step] = true
	}
	if done, msg, err := b.rollout(ctx, "x", next, health, "", nil); !done || err != nil {
		t.Fatalf("after every instance was replaced: %v, %q, %v; want done", done, msg, err)
	}
}
