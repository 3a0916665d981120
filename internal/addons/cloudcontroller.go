package addons

import (
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/lotse/lotse/internal/pki"
)

// CloudControllerName names the addon that gives the cluster's cloud
// controller manager (a process of the control plane, with the client
// certificate of pki.CloudControllerUser) its rights; cloudControllerRBAC
// names its ClusterRole and ClusterRoleBinding.
const (
	CloudControllerName = "cloud-controller-manager"
	cloudControllerRBAC = "lotse:cloud-controller-manager"
)

// renderCloudController: what the cloud-node, cloud-node-lifecycle and
// service-lb controllers read and write, leader election, events; nothing
// else (no Secrets, no pods, no service accounts: it acts as itself).
func renderCloudController(cfg Config) ([]runtime.Object, error) {
	if !cfg.CloudController {
		return nil, nil
	}
	read := []string{"get", "list", "watch"}
	write := []string{"update", "patch"}
	role := clusterRole(cloudControllerRBAC,
		// Initializing a node (addresses, provider ID, labels, the
		// uninitialized taint) and removing one whose machine is gone.
		rule([]string{""}, []string{"nodes"}, append(append(read, write...), "delete")),
		rule([]string{""}, []string{"nodes/status"}, write),
		// A LoadBalancer Service's finalizer and its status.
		rule([]string{""}, []string{"services"}, append(read, write...)),
		rule([]string{""}, []string{"services/status"}, write),
		rule([]string{"", "events.k8s.io"}, []string{"events"}, []string{"create", "update", "patch"}),
		rule([]string{"coordination.k8s.io"}, []string{"leases"}, []string{"get", "create", "update"}),
	)
	binding := clusterRoleBinding(cloudControllerRBAC, cloudControllerRBAC,
		rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: pki.CloudControllerUser})
	return []runtime.Object{role, binding}, nil
}
