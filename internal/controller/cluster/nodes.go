package cluster

// Nodes: the machine network, what joining nodes need in the tenant
// cluster, and the routes between nodes' pod ranges.

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/machine"
)

func (r *Reconciler) ensureNodeNetwork(ctx context.Context, c *lotsev1.Cluster, spec controlplane.Spec) (bool, string, error) {
	if r.Provider == nil {
		return false, "", fmt.Errorf("worker pools need a machine provider, and this manager has none")
	}
	access, err := r.Backend.NodeAccess(spec)
	if err != nil {
		return false, "", err
	}
	if err := r.Provider.EnsureNetwork(ctx, refOf(c), machine.NetworkSpec{
		CIDR: access.NodesCIDR, GatewayPorts: access.GatewayPorts(), Pods: spec.PodCIDR, Services: spec.ServiceCIDR,
	}); err != nil {
		return false, "", err
	}
	if _, err := r.Backend.EnsureNodeAccess(spec); err != nil {
		return false, "", err
	}
	addr := net.JoinHostPort(access.Gateway, strconv.Itoa(access.APIPort))
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false, "node endpoint " + addr + " not listening yet", nil
	}
	conn.Close()
	return true, "", nil
}

// ensureNodeBootstrap prepares the tenant cluster for nodes joining the way
// kubeadm's do: RBAC for bootstrap tokens and CSR auto-approval of kubelet
// client certificates.
func (r *Reconciler) ensureNodeBootstrap(ctx context.Context, spec controlplane.Spec) (bool, string, error) {
	cs, err := r.tenantClient(spec)
	if err != nil {
		return false, "", err
	}
	bindings := []struct{ name, role, kind, subject string }{
		{"lotse:kubelet-bootstrap", "system:node-bootstrapper", rbacv1.GroupKind, lotsev1.BootstrapGroup},
		{"lotse:node-autoapprove-bootstrap", "system:certificates.k8s.io:certificatesigningrequests:nodeclient", rbacv1.GroupKind, lotsev1.BootstrapGroup},
		{"lotse:node-autoapprove-certificate-rotation", "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", rbacv1.GroupKind, "system:nodes"},
	}
	for _, bd := range bindings {
		crb := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: bd.name, Labels: map[string]string{"app.kubernetes.io/managed-by": "lotse"}},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: bd.role},
			Subjects:   []rbacv1.Subject{{Kind: bd.kind, APIGroup: rbacv1.GroupName, Name: bd.subject}},
		}
		if err := upsert(ctx, crb,
			func() error {
				_, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{})
				return err
			},
			func() error {
				cur, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, crb.Name, metav1.GetOptions{})
				if err != nil {
					return err
				}
				cur.Subjects = crb.Subjects
				_, err = cs.RbacV1().ClusterRoleBindings().Update(ctx, cur, metav1.UpdateOptions{})
				return err
			}); err != nil {
			return false, "", err
		}
	}
	return true, "", nil
}

func upsert(_ context.Context, _ metav1.Object, create, update func() error) error {
	err := create()
	if apierrors.IsAlreadyExists(err) {
		return update()
	}
	return err
}

// ensurePodRoutes gives every machine a route to every other node's pod
// range, via that node's address (what a cloud's route controller does).
func (r *Reconciler) ensurePodRoutes(ctx context.Context, c *lotsev1.Cluster, spec controlplane.Spec) (bool, string, error) {
	cs, err := r.tenantClient(spec)
	if err != nil {
		return false, "", err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return false, "", err
	}
	ms := &lotsev1.MachineList{}
	if err := r.Client.List(ctx, ms, client.InNamespace(c.Namespace), client.MatchingLabels{lotsev1.LabelCluster: c.Name}); err != nil {
		return false, "", err
	}
	for _, node := range nodes.Items {
		var ip string
		for _, a := range node.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				ip = a.Address
			}
		}
		if node.Spec.PodCIDR == "" || ip == "" {
			continue
		}
		for _, m := range ms.Items {
			if m.Name == node.Name || !m.DeletionTimestamp.IsZero() {
				continue
			}
			if err := r.Provider.RoutePodRange(ctx, refOf(c), int(m.Spec.Index), node.Spec.PodCIDR, ip); err != nil {
				return false, "", err
			}
		}
	}
	return true, "", nil
}

func (r *Reconciler) tenantClient(spec controlplane.Spec) (kubernetes.Interface, error) {
	kc, err := r.Backend.AdminKubeconfig(spec)
	if err != nil {
		return nil, err
	}
	return r.Tenants.For(spec.Key, kc)
}
