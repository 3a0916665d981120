package e2e

import (
	"context"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/releases"
)

func validCluster(name string) *lotsev1.Cluster {
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{
		Name: name, Namespace: "default",
		// Paused: the manager leaves it alone, so no control plane starts.
		Annotations: map[string]string{lotsev1.PausedAnnotation: "true"},
	}}
	c.Spec.Kubernetes.Version = "1.36.3"
	return c
}

// TestValidationOnCreate: bad specs are rejected with a message naming the field.
func TestValidationOnCreate(t *testing.T) {
	mc := mgmtClient(t)
	cases := []struct {
		name   string
		mutate func(*lotsev1.Cluster)
		want   []string
	}{
		{"unknown version", func(c *lotsev1.Cluster) { c.Spec.Kubernetes.Version = "1.20.0" },
			[]string{"spec.kubernetes.version: 1.20.0 is not in the catalog or has expired; supported versions: 1.37.2, 1.36.3, 1.35.4"}},
		{"malformed pod CIDR", func(c *lotsev1.Cluster) { c.Spec.Networking.Pods = "10.244.0.0/33" },
			[]string{"spec.networking.pods", "is not an IPv4 CIDR", "10.244.0.0/16"}},
		{"pod CIDR not a CIDR at all", func(c *lotsev1.Cluster) { c.Spec.Networking.Pods = "banana" },
			[]string{"spec.networking.pods: banana is not an IPv4 CIDR"}},
		{"malformed service CIDR", func(c *lotsev1.Cluster) { c.Spec.Networking.Services = "10.96.0.0" },
			[]string{"spec.networking.services: 10.96.0.0 is not an IPv4 CIDR"}},
		{"host bits set", func(c *lotsev1.Cluster) { c.Spec.Networking.Pods = "10.244.1.0/16" },
			[]string{"spec.networking.pods has host bits set"}},
		{"overlapping pod and service CIDRs", func(c *lotsev1.Cluster) {
			c.Spec.Networking.Pods = "10.0.0.0/8"
			c.Spec.Networking.Services = "10.96.0.0/16"
		}, []string{"spec.networking.pods (10.0.0.0/8) and spec.networking.services (10.96.0.0/16) overlap"}},
		{"service CIDR too large", func(c *lotsev1.Cluster) { c.Spec.Networking.Services = "10.0.0.0/8" },
			[]string{"spec.networking.services must be between /12 and /28"}},
		{"unknown encryption provider", func(c *lotsev1.Cluster) { c.Spec.Encryption.Provider = "rot13" },
			[]string{"spec.encryption.provider", `Unsupported value: "rot13"`, `"aescbc"`}},
		{"bad encrypted resource", func(c *lotsev1.Cluster) {
			c.Spec.Encryption.Resources = []lotsev1.EncryptedResource{"Config Maps"}
		}, []string{"spec.encryption.resources[0]", "should match"}},
		{"shared datastore on a seed", func(c *lotsev1.Cluster) {
			c.Spec.ControlPlane.SeedSelector = noSeed()
			c.Spec.ControlPlane.Datastore = lotsev1.DatastoreShared
		}, []string{"spec.controlPlane.datastore: the shared datastore is not offered on seeds"}},
		{"pool minimum above maximum", func(c *lotsev1.Cluster) {
			c.Spec.Workers = []lotsev1.WorkerPool{{Name: "a", Minimum: 3, Maximum: 1, MaxSurge: 1}}
		}, []string{"spec.workers[]: minimum must not exceed maximum"}},
		{"duplicate pool names", func(c *lotsev1.Cluster) {
			c.Spec.Workers = []lotsev1.WorkerPool{{Name: "a", Minimum: 1, Maximum: 1, MaxSurge: 1}, {Name: "a", Minimum: 1, Maximum: 1, MaxSurge: 1}}
		}, []string{"spec.workers[1]", "Duplicate value", `"a"`}},
		{"bad pool name", func(c *lotsev1.Cluster) {
			c.Spec.Workers = []lotsev1.WorkerPool{{Name: "Web_Pool", Minimum: 1, Maximum: 1, MaxSurge: 1}}
		}, []string{"spec.workers[0].name", "should match"}},
		{"bad taint effect", func(c *lotsev1.Cluster) {
			c.Spec.Workers = []lotsev1.WorkerPool{{Name: "a", Minimum: 1, Maximum: 1, MaxSurge: 1,
				Taints: []lotsev1.Taint{{Key: "dedicated", Effect: "Sometimes"}}}}
		}, []string{"spec.workers[].taints: effect must be NoSchedule, PreferNoSchedule or NoExecute"}},
		{"bad label key", func(c *lotsev1.Cluster) {
			c.Spec.Workers = []lotsev1.WorkerPool{{Name: "a", Minimum: 1, Maximum: 1, MaxSurge: 1,
				Labels: map[string]lotsev1.LabelValue{"not a key!": "x"}}}
		}, []string{"spec.workers[].labels: keys must be valid label keys"}},
		{"bad label value", func(c *lotsev1.Cluster) {
			c.Spec.Workers = []lotsev1.WorkerPool{{Name: "a", Minimum: 1, Maximum: 1, MaxSurge: 1,
				Labels: map[string]lotsev1.LabelValue{"tier": "-web-"}}}
		}, []string{"spec.workers[0].labels.tier", "should match"}},
		{"surge and unavailable both zero", func(c *lotsev1.Cluster) {
			c.Spec.Workers = []lotsev1.WorkerPool{{Name: "a", Minimum: 1, Maximum: 1, MaxSurge: 0, MaxUnavailable: 0}}
		}, []string{"maxSurge and maxUnavailable must not both be 0"}},
		{"malformed health check timeout", func(c *lotsev1.Cluster) {
			c.Spec.Workers = []lotsev1.WorkerPool{{Name: "a", Minimum: 1, Maximum: 1, MaxSurge: 1,
				HealthCheck: lotsev1.MachineHealthCheck{NodeNotReadyTimeout: "5 minutes"}}}
		}, []string{"spec.workers[].healthCheck.nodeNotReadyTimeout: 5 minutes is not a duration; write it like 5m"}},
		{"maxUnhealthy above 100%", func(c *lotsev1.Cluster) {
			c.Spec.Workers = []lotsev1.WorkerPool{{Name: "a", Minimum: 1, Maximum: 1, MaxSurge: 1,
				HealthCheck: lotsev1.MachineHealthCheck{MaxUnhealthy: "140%"}}}
		}, []string{"spec.workers[].healthCheck.maxUnhealthy: 140% must be a percentage from 0% to 100% or a count"}},
		{"malformed drain timeout", func(c *lotsev1.Cluster) {
			c.Spec.Workers = []lotsev1.WorkerPool{{Name: "a", Minimum: 1, Maximum: 1, MaxSurge: 1, DrainTimeout: "soon"}}
		}, []string{"spec.workers[].drainTimeout: soon is not a duration; write it like 10m"}},
		{"unknown update strategy", func(c *lotsev1.Cluster) {
			c.Spec.Workers = []lotsev1.WorkerPool{{Name: "a", Minimum: 1, Maximum: 1, MaxSurge: 1, UpdateStrategy: "Recreate"}}
		}, []string{"spec.workers[0].updateStrategy", `Unsupported value: "Recreate"`, `"RollingReplace"`}},
		{"maintenance window ends before it begins", func(c *lotsev1.Cluster) {
			c.Spec.Maintenance.TimeWindow = &lotsev1.MaintenanceTimeWindow{Begin: "100000+0100", End: "090000+0100"}
		}, []string{"spec.maintenance.timeWindow: from 100000+0100 to 090000+0100 is not a window of 30 minutes to 6 hours; end must come after begin"}},
		{"malformed maintenance window offset", func(c *lotsev1.Cluster) {
			c.Spec.Maintenance.TimeWindow = &lotsev1.MaintenanceTimeWindow{Begin: "220000+1", End: "230000+0100"}
		}, []string{"spec.maintenance.timeWindow.begin: 220000+1 is not a time of day with its UTC offset; write it HHMMSS+ZZZZ"}},
		{"unknown network plugin", func(c *lotsev1.Cluster) { c.Spec.Networking.Plugin = "flannel" },
			[]string{"spec.networking.plugin", `Unsupported value: "flannel"`, `"bridge"`, `"cilium"`, `"calico"`}},
		{"bad nodes CIDR", func(c *lotsev1.Cluster) { c.Spec.Networking.Nodes = "10.250.0.0/8" },
			[]string{"spec.networking.nodes must be an IPv4 CIDR between /16 and /28"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validCluster("invalid")
			tc.mutate(c)
			err := mc.Create(context.Background(), c, client.DryRunAll)
			if err == nil {
				t.Fatalf("accepted: %+v", c.Spec)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
	// The defaults make a minimal spec valid.
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "minimal", Namespace: "default"}}
	if err := mc.Create(context.Background(), c, client.DryRunAll); err != nil {
		t.Fatalf("minimal cluster rejected: %v", err)
	}
	if c.Spec.Kubernetes.Version != releases.Default().Version || c.Spec.Networking.Pods != "10.244.0.0/16" || c.Spec.Encryption.Provider != "aescbc" ||
		c.Spec.Networking.Plugin != lotsev1.NetworkPluginBridge {
		t.Errorf("defaults not applied: %+v", c.Spec)
	}
}

// TestProjectValidation: bad projects are refused naming the field.
func TestProjectValidation(t *testing.T) {
	mc := mgmtClient(t)
	for _, tc := range []struct {
		name    string
		project lotsev1.Project
		want    string
	}{
		{"name too long", lotsev1.Project{ObjectMeta: metav1.ObjectMeta{Name: strings.Repeat("a", 56)}},
			"metadata.name: a project's name has at most 55 characters"},
		{"system member", lotsev1.Project{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: lotsev1.ProjectSpec{
			Members: []lotsev1.ProjectMember{{Kind: "Group", Name: "system:masters", Role: lotsev1.RoleOwner}}}},
			"spec.members[].name: names starting with system: belong to Kubernetes itself"},
		{"service account without namespace", lotsev1.Project{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: lotsev1.ProjectSpec{
			Members: []lotsev1.ProjectMember{{Kind: "ServiceAccount", Name: "deployer", Role: lotsev1.RoleAdmin}}}},
			"a ServiceAccount member is named NAMESPACE:NAME"},
		{"unknown role", lotsev1.Project{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: lotsev1.ProjectSpec{
			Members: []lotsev1.ProjectMember{{Kind: "User", Name: "alice", Role: "boss"}}}},
			`spec.members[0].role: Unsupported value: "boss"`},
		{"negative quota", lotsev1.Project{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: lotsev1.ProjectSpec{
			Quota: &lotsev1.ProjectQuota{Clusters: ptr.To(int32(-1))}}},
			"spec.quota.clusters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.project
			err := mc.Create(context.Background(), &p, client.DryRunAll)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("want an error naming %q, got %v", tc.want, err)
			}
		})
	}
}

// TestValidationOnUpdate: immutable fields, downgrades and skipped minors
// are rejected with a message naming the field.
func TestValidationOnUpdate(t *testing.T) {
	mc := mgmtClient(t)
	cases := []struct {
		name    string
		initial func(*lotsev1.Cluster)
		update  func(*lotsev1.Cluster)
		want    string
	}{
		{"change networking", nil, func(c *lotsev1.Cluster) { c.Spec.Networking.Pods = "10.200.0.0/16" },
			"spec.networking.pods, services, nodes and egress are immutable"},
		{"set a nodes range later", nil, func(c *lotsev1.Cluster) { c.Spec.Networking.Nodes = "10.250.9.0/24" },
			"spec.networking.pods, services, nodes and egress are immutable"},
		{"change egress", nil, func(c *lotsev1.Cluster) { c.Spec.Networking.Egress = lotsev1.EgressAllow },
			"spec.networking.pods, services, nodes and egress are immutable"},
		{"change the network plugin", nil, func(c *lotsev1.Cluster) { c.Spec.Networking.Plugin = lotsev1.NetworkPluginCilium },
			"spec.networking.plugin cannot change on an existing cluster (bridge to cilium)"},
		{"high availability back to false", func(c *lotsev1.Cluster) { c.Spec.ControlPlane.HighAvailability = true },
			func(c *lotsev1.Cluster) { c.Spec.ControlPlane.HighAvailability = false },
			"spec.controlPlane.highAvailability cannot go back to false"},
		{"an unknown encryption provider", nil, func(c *lotsev1.Cluster) { c.Spec.Encryption.Provider = "kms" },
			`spec.encryption.provider: Unsupported value: "kms"`},
		{"move a control plane onto a seed", nil, func(c *lotsev1.Cluster) { c.Spec.ControlPlane.SeedSelector = noSeed() },
			"spec.controlPlane.seedSelector cannot be added or removed"},
		{"change the seed selector", func(c *lotsev1.Cluster) { c.Spec.ControlPlane.SeedSelector = noSeed() },
			func(c *lotsev1.Cluster) {
				c.Spec.ControlPlane.SeedSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "gold"}}
			},
			"spec.controlPlane.seedSelector is immutable"},
		{"high availability back to false on a seed", func(c *lotsev1.Cluster) {
			c.Spec.ControlPlane.SeedSelector = noSeed()
			c.Spec.ControlPlane.HighAvailability = true
		},
			func(c *lotsev1.Cluster) { c.Spec.ControlPlane.HighAvailability = false },
			"spec.controlPlane.highAvailability cannot go back to false"},
		{"downgrade", nil, func(c *lotsev1.Cluster) { c.Spec.Kubernetes.Version = "1.35.4" },
			"spec.kubernetes.version: downgrade from 1.36.3 to 1.35.4 is not supported"},
		{"skip a minor", func(c *lotsev1.Cluster) { c.Spec.Kubernetes.Version = "1.35.4" },
			func(c *lotsev1.Cluster) { c.Spec.Kubernetes.Version = "1.37.2" },
			"spec.kubernetes.version: an upgrade may not skip a minor version"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			c := validCluster("upd-" + string(rune('a'+i)))
			if tc.initial != nil {
				tc.initial(c)
			}
			if err := mc.Create(ctx, c); err != nil {
				t.Fatalf("create: %v", err)
			}
			t.Cleanup(func() { _ = mc.Delete(context.Background(), c) })
			tc.update(c)
			err := mc.Update(ctx, c)
			if err == nil {
				t.Fatal("update accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not mention %q:\n%v", tc.want, err)
			}
		})
	}
	// A patch upgrade within the catalog is accepted.
	c := validCluster("upd-ok")
	c.Spec.Kubernetes.Version = "1.35.4"
	if err := mc.Create(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mc.Delete(context.Background(), c) })
	c.Spec.Kubernetes.Version = "1.36.3"
	if err := mc.Update(context.Background(), c); err != nil {
		t.Errorf("upgrade 1.35.4 -> 1.36.3 rejected: %v", err)
	}
	// The encryption provider changes through a rotation.
	c.Spec.Encryption.Provider = "secretbox"
	if err := mc.Update(context.Background(), c); err != nil {
		t.Errorf("spec.encryption.provider change rejected: %v", err)
	}
	// The network policy default may change at any time.
	c.Spec.Networking.DefaultDenyTenantNamespaces = true
	if err := mc.Update(context.Background(), c); err != nil {
		t.Errorf("spec.networking.defaultDenyTenantNamespaces change rejected: %v", err)
	}
}

// TestCLIChecks: the CLI rejects bad input before calling the API and says what to do.
func TestCLIChecks(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"cluster", "create", "x", "--kubernetes-version", "1.20.0"}, "--kubernetes-version"},
		{[]string{"cluster", "create"}, "expected one name"},
		{[]string{"cluster", "get", "does-not-exist"}, "not found; see `lotse cluster list -A`"},
		{[]string{"fleet", "delete", "does-not-exist"}, "fleet default/does-not-exist not found; see `lotse fleet list`"},
		{[]string{"cluster", "delete", "does-not-exist"}, "cluster default/does-not-exist not found; see `lotse cluster list`"},
		{[]string{"cluster", "kubeconfig", "does-not-exist"}, "does not exist or is still being created"},
		{[]string{"release", "build", "9.9.9"}, "not in the catalog"},
		{[]string{"project", "create", "x", "--member", "alice=boss"}, `role "boss" is not one of owner, admin, viewer`},
		{[]string{"project", "create", "x", "--member", "alice"}, "write [KIND:]NAME=ROLE"},
		{[]string{"project", "quota", "does-not-exist"}, "give at least one of --max-clusters"},
		{[]string{"project", "get", "does-not-exist"}, "project does-not-exist does not exist"},
		{[]string{"cluster", "list", "-p", "acme", "-n", "default2"}, "--project acme and --namespace default2 disagree"},
	}
	for _, tc := range cases {
		out, err := lotseCLI(t, tc.args...)
		if err == nil {
			t.Errorf("lotse %v succeeded: %s", tc.args, out)
			continue
		}
		if !strings.Contains(out, tc.want) {
			t.Errorf("lotse %v: output does not mention %q:\n%s", tc.args, tc.want, out)
		}
	}
	// Without a management plane, the CLI says how to get one.
	cmd := []string{"cluster", "list", "--kubeconfig", "/nonexistent/kubeconfig"}
	if out, err := lotseCLI(t, cmd...); err == nil || !strings.Contains(out, "/nonexistent/kubeconfig") {
		t.Errorf("lotse %v: %v\n%s", cmd, err, out)
	}
}

// noSeed selects no seed: the validation tests' clusters must not land
// on TestSeed's seed, which runs beside them.
func noSeed() *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{"e2e": "no-such-seed"}}
}
