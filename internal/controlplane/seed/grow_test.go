package seed

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	policyv1 "k8s.io/api/policy/v1"

	"github.com/lotse/lotse/internal/controlplane"
)

// TestRenderEtcdGrowth: while etcd grows, the StatefulSet has one more
// replica than members, starts it as an existing member of the members so
// far, and a partition keeps the others as they are; once grown, every
// member has one template, the partition is gone and the budget is back.
func TestRenderEtcdGrowth(t *testing.T) {
	r, _ := rendered(t, controlplane.Spec{Key: "cluster/default/c1", Name: "c1", HighAvailability: true})
	for _, tc := range []struct {
		name            string
		joined          int
		grown           bool
		replicas        int32
		partition       int32
		state           string
		members, budget bool
	}{
		{"second member joining", 1, true, 2, 1, "existing", false, false},
		{"third member joining", 2, true, 3, 2, "existing", false, false},
		{"grown", 0, true, 3, 0, "existing", true, true},
		{"highly available from the start", 0, false, 3, 0, "new", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := r
			r.layout.EtcdJoined, r.layout.EtcdGrown = tc.joined, tc.grown
			objs := r.objects(stageEtcd)
			sts, ok := find[*appsv1.StatefulSet](objs, etcdName)
			if !ok {
				t.Fatal("no StatefulSet")
			}
			if *sts.Spec.Replicas != tc.replicas || *sts.Spec.UpdateStrategy.RollingUpdate.Partition != tc.partition {
				t.Errorf("replicas %d partition %d, want %d and %d", *sts.Spec.Replicas, *sts.Spec.UpdateStrategy.RollingUpdate.Partition, tc.replicas, tc.partition)
			}
			args := sts.Spec.Template.Spec.Containers[0].Args
			if !slices.Contains(args, "--initial-cluster-state="+tc.state) {
				t.Errorf("args %v: want state %s", args, tc.state)
			}
			for _, a := range args {
				if v, ok := strings.CutPrefix(a, "--initial-cluster="); ok && len(strings.Split(v, ",")) != int(tc.replicas) {
					t.Errorf("initial cluster %s: want %d members", v, tc.replicas)
				}
			}
			if _, ok := find[*policyv1.PodDisruptionBudget](objs, etcdName); ok != tc.budget {
				t.Errorf("disruption budget: %t, want %t", ok, tc.budget)
			}
			_, apiN, _ := r.replicas()
			if want := map[bool]int32{true: 2, false: 1}[tc.members]; apiN != want {
				t.Errorf("API servers: %d, want %d (only once etcd has grown)", apiN, want)
			}
		})
	}
}
