package cluster

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/addons"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/images"
	"github.com/lotse/lotse/internal/machine"
	"github.com/lotse/lotse/internal/tasks"
)

// Task names of worker pools.
const (
	TaskNodeNetwork   = "node-network"
	TaskNodeBootstrap = "node-bootstrap"
	TaskMachines      = "machines"
	TaskPodRoutes     = "pod-routes"
	TaskAddons        = "addons"
)

// workerTasks are the tasks of a cluster with worker pools.
func (r *Reconciler) workerTasks(c *lotsev1.Cluster, spec controlplane.Spec) []tasks.Task {
	if len(c.Spec.Workers) == 0 {
		return nil
	}
	return []tasks.Task{
		{Name: TaskNodeNetwork, DependsOn: []string{r.EndpointTask(spec)}, Run: func(ctx context.Context) (bool, string, error) {
			return r.ensureNodeNetwork(ctx, c, spec)
		}},
		{Name: TaskNodeBootstrap, DependsOn: []string{TaskNodeNetwork, "kube-controller-manager"}, Run: func(ctx context.Context) (bool, string, error) {
			return r.ensureNodeBootstrap(ctx, spec)
		}},
		{Name: TaskMachines, DependsOn: []string{TaskNodeBootstrap}, Run: func(ctx context.Context) (bool, string, error) {
			return r.ensureMachines(ctx, c)
		}},
		// Not after the machines: one broken machine must not keep routes
		// from the others.
		{Name: TaskPodRoutes, DependsOn: []string{TaskNodeBootstrap}, Run: func(ctx context.Context) (bool, string, error) {
			return r.ensurePodRoutes(ctx, c, spec)
		}},
		{Name: TaskAddons, DependsOn: []string{TaskNodeBootstrap}, Run: func(ctx context.Context) (bool, string, error) {
			return r.ensureAddons(ctx, c, spec)
		}},
	}
}

// ensureAddons applies the managed components (drift correction included)
// and is done once they are available.
func (r *Reconciler) ensureAddons(ctx context.Context, c *lotsev1.Cluster, spec controlplane.Spec) (bool, string, error) {
	kc, err := r.Backend.AdminKubeconfig(spec)
	if err != nil {
		return false, "", err
	}
	dyn, err := r.Tenants.Dynamic(spec.Key, kc)
	if err != nil {
		return false, "", err
	}
	set, err := images.Lookup(c.Spec.Kubernetes.Version)
	if err != nil {
		return false, "", err
	}
	cfg := addons.Config{
		ClusterDNS:   addons.ClusterDNS(c.Spec.Networking.Services),
		CoreDNSImage: set.CoreDNS.Ref(),
		Upstreams:    r.DNSUpstreams,
		Replicas:     min(2, totalMinimum(c)),
	}
	// CoreDNS tolerates the pools' own taints (exactly those), so a cluster
	// whose pools are all tainted still has DNS.
	for _, pool := range c.Spec.Workers {
		for _, t := range pool.Taints {
			cfg.Tolerations = append(cfg.Tolerations, addons.Toleration{Key: t.Key, Value: t.Value, Effect: t.Effect})
		}
	}
	if cfg.Tunnel, err = r.tunnelAddon(spec); err != nil {
		return false, "", err
	}
	objs, err := addons.Render(cfg)
	if err != nil {
		return false, "", err
	}
	if err := addons.Apply(ctx, dyn, objs); err != nil {
		return false, "", err
	}
	cs, err := r.Tenants.For(spec.Key, kc)
	if err != nil {
		return false, "", err
	}
	if c.Spec.Networking.Egress != lotsev1.EgressAllow {
		if err := r.watchImagePulls(ctx, spec); err != nil {
			return false, "", err
		}
	}
	if totalMinimum(c) == 0 {
		return true, "", nil // no nodes: nothing can run, nothing to wait for
	}
	ok, msg, err := addons.Health(ctx, cs, cfg.Tunnel != nil)
	return ok, msg, err
}

// tunnelAddon configures the konnectivity agents of a cluster whose control
// plane has a tunnel (nil otherwise).
func (r *Reconciler) tunnelAddon(spec controlplane.Spec) (*addons.Tunnel, error) {
	access, err := r.Backend.NodeAccess(spec)
	if err != nil || access.TunnelPort == 0 {
		return nil, err
	}
	creds, err := r.Backend.TunnelCredentials(spec)
	if err != nil {
		return nil, err
	}
	rel := spec.Binaries.Release
	return &addons.Tunnel{
		Image:   images.Ref(images.KonnectivityAgentName, "v"+rel.Konnectivity),
		Host:    access.Gateway,
		Port:    access.TunnelPort,
		Servers: access.TunnelServers,
		CA:      creds.CA, Cert: creds.Cert, Key: creds.Key,
	}, nil
}

func totalMinimum(c *lotsev1.Cluster) int {
	n := 0
	for _, p := range c.Spec.Workers {
		n += int(p.Minimum)
	}
	return n
}

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

// ensureMachines makes each pool have its desired number of Machines.
func (r *Reconciler) ensureMachines(ctx context.Context, c *lotsev1.Cluster) (bool, string, error) {
	// Straight from the API: a cache that has not seen a just-created
	// Machine would hand its index (address, namespace, cgroup) out twice.
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	list := &lotsev1.MachineList{}
	if err := reader.List(ctx, list, client.InNamespace(c.Namespace), client.MatchingLabels{lotsev1.LabelCluster: c.Name}); err != nil {
		return false, "", err
	}
	used := map[int32]bool{}
	byPool := map[string][]*lotsev1.Machine{}
	for i := range list.Items {
		m := &list.Items[i]
		used[m.Spec.Index] = true
		if m.DeletionTimestamp.IsZero() {
			byPool[m.Spec.Pool] = append(byPool[m.Spec.Pool], m)
		}
	}
	nextIndex := func() int32 {
		for i := int32(0); ; i++ {
			if !used[i] {
				used[i] = true
				return i
			}
		}
	}
	var waiting []string
	wanted := map[string]bool{}
	for _, pool := range c.Spec.Workers {
		wanted[pool.Name] = true
		have := byPool[pool.Name]
		desired := int(pool.Minimum)
		for len(have) < desired {
			m := &lotsev1.Machine{
				ObjectMeta: metav1.ObjectMeta{
					GenerateName: c.Name + "-" + pool.Name + "-",
					Namespace:    c.Namespace,
					Labels:       map[string]string{lotsev1.LabelCluster: c.Name, lotsev1.LabelPool: pool.Name},
				},
				Spec: lotsev1.MachineSpec{Cluster: c.Name, Pool: pool.Name, MachineClass: pool.MachineClass,
					Version: c.Spec.Kubernetes.Version, Index: nextIndex()},
			}
			if m.Spec.MachineClass == "" {
				m.Spec.MachineClass = lotsev1.MachineClassLocal
			}
			if err := controllerutil.SetControllerReference(c, m, r.Client.Scheme()); err != nil {
				return false, "", err
			}
			if err := r.Client.Create(ctx, m); err != nil {
				return false, "", err
			}
			have = append(have, m)
			r.event(c, corev1.EventTypeNormal, "MachineCreated", "ScaleUp", "pool %s: created machine %s", pool.Name, m.Name)
		}
		if len(have) > desired {
			// Remove machines that are not running first, then the newest.
			sort.SliceStable(have, func(i, j int) bool {
				ri, rj := have[i].Status.Phase == lotsev1.MachineRunning, have[j].Status.Phase == lotsev1.MachineRunning
				if ri != rj {
					return !ri
				}
				return have[i].Spec.Index > have[j].Spec.Index
			})
			for _, m := range have[:len(have)-desired] {
				if err := r.Client.Delete(ctx, m); client.IgnoreNotFound(err) != nil {
					return false, "", err
				}
				r.event(c, corev1.EventTypeNormal, "MachineDeleted", "ScaleDown", "pool %s: draining and deleting machine %s", pool.Name, m.Name)
			}
			have = have[len(have)-desired:]
		}
		for _, m := range have {
			if !machineReady(m) {
				waiting = append(waiting, m.Name)
			}
		}
	}
	for pool, ms := range byPool {
		if wanted[pool] {
			continue
		}
		for _, m := range ms {
			if err := r.Client.Delete(ctx, m); client.IgnoreNotFound(err) != nil {
				return false, "", err
			}
		}
		waiting = append(waiting, "removed pool "+pool)
	}
	if len(waiting) > 0 {
		sort.Strings(waiting)
		return false, "waiting for machines: " + strings.Join(waiting, ", "), nil
	}
	return true, "", nil
}

func machineReady(m *lotsev1.Machine) bool {
	return m.Status.Phase == lotsev1.MachineRunning && meta.IsStatusConditionTrue(m.Status.Conditions, "NodeReady")
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

// workerStatus summarises pools into status and the EveryNodeReady condition.
func (r *Reconciler) workerStatus(ctx context.Context, c *lotsev1.Cluster, status *lotsev1.ClusterStatus) error {
	if len(c.Spec.Workers) == 0 {
		status.Workers = nil
		meta.RemoveStatusCondition(&status.Conditions, lotsev1.ConditionEveryNodeReady)
		meta.RemoveStatusCondition(&status.Conditions, lotsev1.ConditionSystemComponentsHealthy)
		return nil
	}
	list := &lotsev1.MachineList{}
	if err := r.Client.List(ctx, list, client.InNamespace(c.Namespace), client.MatchingLabels{lotsev1.LabelCluster: c.Name}); err != nil {
		return err
	}
	status.Workers = nil
	var notReady []string
	for _, pool := range c.Spec.Workers {
		ps := lotsev1.WorkerPoolStatus{Name: pool.Name, Desired: pool.Minimum}
		for i := range list.Items {
			m := &list.Items[i]
			if m.Spec.Pool != pool.Name || !m.DeletionTimestamp.IsZero() {
				continue
			}
			if m.Spec.Version == c.Spec.Kubernetes.Version {
				ps.Updated++
			}
			if machineReady(m) {
				ps.Ready++
			} else {
				notReady = append(notReady, m.Name)
			}
		}
		if ps.Ready < ps.Desired {
			notReady = append(notReady, fmt.Sprintf("pool %s: %d/%d ready", pool.Name, ps.Ready, ps.Desired))
		}
		status.Workers = append(status.Workers, ps)
	}
	if err := r.systemComponentsHealth(ctx, c, status); err != nil {
		return err
	}
	if len(notReady) == 0 {
		setCondition(status, c.Generation, lotsev1.ConditionEveryNodeReady, true, "AllNodesReady", "every machine of every pool is a Ready node")
	} else {
		sort.Strings(notReady)
		setCondition(status, c.Generation, lotsev1.ConditionEveryNodeReady, false, "NodesNotReady", truncate(strings.Join(notReady, "; "), 1024))
	}
	return nil
}

// deleteMachines deletes every Machine of the cluster and reports whether
// they are all gone (their finalizers drain and clean up).
func (r *Reconciler) deleteMachines(ctx context.Context, c *lotsev1.Cluster) (bool, error) {
	list := &lotsev1.MachineList{}
	if err := r.Client.List(ctx, list, client.InNamespace(c.Namespace), client.MatchingLabels{lotsev1.LabelCluster: c.Name}); err != nil {
		return false, err
	}
	for i := range list.Items {
		if list.Items[i].DeletionTimestamp.IsZero() {
			if err := r.Client.Delete(ctx, &list.Items[i]); client.IgnoreNotFound(err) != nil {
				return false, err
			}
		}
	}
	return len(list.Items) == 0, nil
}

// systemComponentsHealth sets SystemComponentsHealthy from the addons' state.
func (r *Reconciler) systemComponentsHealth(ctx context.Context, c *lotsev1.Cluster, status *lotsev1.ClusterStatus) error {
	spec := controlplane.Spec{Key: refOf(c).Key()}
	cs, err := r.tenantClient(spec)
	if err != nil {
		setCondition(status, c.Generation, lotsev1.ConditionSystemComponentsHealthy, false, "APIUnavailable", err.Error())
		return nil
	}
	access, err := r.Backend.NodeAccess(spec)
	if err != nil {
		setCondition(status, c.Generation, lotsev1.ConditionSystemComponentsHealthy, false, "ControlPlaneUnknown", err.Error())
		return nil
	}
	ok, msg, err := addons.Health(ctx, cs, access.TunnelPort != 0)
	if err != nil {
		setCondition(status, c.Generation, lotsev1.ConditionSystemComponentsHealthy, false, "APIUnavailable", err.Error())
		return nil
	}
	reason := "AddonsAvailable"
	if !ok {
		reason = "AddonsUnavailable"
	}
	setCondition(status, c.Generation, lotsev1.ConditionSystemComponentsHealthy, ok, reason, msg)
	return nil
}
