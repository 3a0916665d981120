package cloudcontroller

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/lotse/lotse/internal/cloudprovider"
	"github.com/lotse/lotse/internal/clusterref"
)

type machines map[string]*cloudprovider.Machine

func (m machines) Machine(_ context.Context, _ clusterref.Ref, nodeName, _ string) (*cloudprovider.Machine, error) {
	return m[nodeName], nil
}

type noBalancers struct{ deleted []clusterref.Ref }

func (n *noBalancers) Ensure(context.Context, cloudprovider.LoadBalancer) (string, error) {
	return "", nil
}
func (n *noBalancers) Get(context.Context, clusterref.Ref, string) (string, bool, error) {
	return "", false, nil
}
func (n *noBalancers) Delete(context.Context, clusterref.Ref, string) error { return nil }
func (n *noBalancers) DeleteCluster(_ context.Context, c clusterref.Ref) error {
	n.deleted = append(n.deleted, c)
	return nil
}

// A registered node with the uninitialized taint gets its machine's
// metadata and loses the taint; Forget stops the controllers and removes
// the cluster's balancers.
func TestRunnerInitializesNodes(t *testing.T) {
	ref := clusterref.Ref{Namespace: "default", Name: "shop"}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "m1", Annotations: map[string]string{"alpha.kubernetes.io/provided-node-ip": "10.250.0.2"}},
		Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: "node.cloudprovider.kubernetes.io/uninitialized", Value: "true", Effect: corev1.TaintEffectNoSchedule}}},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.250.0.2"}}},
	}
	cs := fake.NewClientset(node)
	lbs := &noBalancers{}
	r := &Runner{LoadBalancers: lbs, Machines: machines{"m1": {Name: "m1", ProviderID: cloudprovider.ProviderID(ref, "m1"),
		Address: "10.250.0.2", InstanceType: "local", Zone: "zone-a"}}}
	ctx := context.Background()
	r.Ensure(ctx, ref, cs, "lab")
	r.Ensure(ctx, ref, cs, "lab") // a second call changes nothing

	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := cs.CoreV1().Nodes().Get(ctx, "m1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n.Spec.ProviderID == "lotse://default/shop/m1" && len(n.Spec.Taints) == 0 &&
			n.Labels["topology.kubernetes.io/zone"] == "zone-a" && n.Labels["topology.kubernetes.io/region"] == "lab" &&
			n.Labels["node.kubernetes.io/instance-type"] == "local" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not initialized: providerID %q, taints %v, labels %v", n.Spec.ProviderID, n.Spec.Taints, n.Labels)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := r.Forget(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if len(lbs.deleted) != 1 || lbs.deleted[0] != ref {
		t.Errorf("balancers of the forgotten cluster not removed: %v", lbs.deleted)
	}
}
