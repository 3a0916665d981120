// Package machine reconciles Machine objects: it runs each machine through
// its provider, joins it to its cluster as a node, approves its serving
// certificate, reports its state, and on deletion drains the node before
// removing everything of the machine.
package machine

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/addons"
	"github.com/lotse/lotse/internal/certrequest"
	"github.com/lotse/lotse/internal/clusterref"
	"github.com/lotse/lotse/internal/controller/patch"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/drain"
	"github.com/lotse/lotse/internal/machine"
	"github.com/lotse/lotse/internal/releases"
	"github.com/lotse/lotse/internal/tenant"
)

// ImageSource provides the images a node of a release needs: the pause
// image's reference and the tarballs to load. ready=false while they are
// still being built.
type ImageSource func(ctx context.Context, version string) (pauseRef string, tarballs []string, ready bool, err error)

// Reconciler reconciles Machines of the local machine class.
type Reconciler struct {
	Client   client.Client
	Backend  controlplane.Backend
	Provider machine.Provider
	Releases *releases.Store
	Images   ImageSource
	Tenants  tenant.Access
	// Recorder records events on Machines (a drain held up by a
	// PodDisruptionBudget, a drain forced after its timeout).
	Recorder events.EventRecorder
}

// SetupWithManager registers the reconciler.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&lotsev1.Machine{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}

// Reconcile brings one Machine towards a Ready node, or removes it.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	m := &lotsev1.Machine{}
	if err := r.Client.Get(ctx, req.NamespacedName, m); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	ref := clusterref.Ref{Namespace: m.Namespace, Name: m.Spec.Cluster}
	if !m.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, m, ref)
	}
	if controllerutil.AddFinalizer(m, lotsev1.MachineFinalizer) {
		if err := r.Client.Update(ctx, m); err != nil {
			return ctrl.Result{}, err
		}
	}
	cluster := &lotsev1.Cluster{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Spec.Cluster}, cluster); err != nil {
		return ctrl.Result{}, err
	}
	status := m.Status.DeepCopy()
	if status.Phase == "" {
		status.Phase = lotsev1.MachinePending
	}
	if m.Spec.Stopped {
		return ctrl.Result{}, r.stop(ctx, m, cluster, ref, status)
	}
	if status.Phase == lotsev1.MachineStopped {
		// Starting again: the startup timeout of health checks counts from
		// now, not from when the machine stopped (hours ago, after a
		// hibernation).
		status.Phase = lotsev1.MachineProvisioning
		meta.RemoveStatusCondition(&status.Conditions, "NodeReady")
		setCond(status, m.Generation, "NodeReady", false, "Starting", "the machine starts again after a stop")
	}
	lm, cs, msg, err := r.machine(ctx, m, cluster, ref)
	if err != nil || lm == nil {
		if err == nil {
			setCond(status, m.Generation, "NodeReady", false, "Waiting", msg)
			return ctrl.Result{RequeueAfter: 5 * time.Second}, r.writeStatus(ctx, m, status)
		}
		status.FailureMessage = err.Error()
		return ctrl.Result{}, errors.Join(err, r.writeStatus(ctx, m, status))
	}
	node, err := cs.CoreV1().Nodes().Get(ctx, m.Name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	if err == nil {
		lm.PodCIDR = node.Spec.PodCIDR
	} else {
		node = nil
	}
	// A bootstrap token only until the node registered: the kubelet
	// registers with the client certificate the token got it. The token is
	// deleted once the node is Ready.
	if node == nil {
		if lm.BootstrapToken, err = ensureBootstrapToken(ctx, cs, m.Name); err != nil {
			return ctrl.Result{}, err
		}
	}
	if node != nil && inPlaceDue(node, m.Spec.Version) {
		// An in-place update: drain first; the Ensure below then swaps
		// the kubelet and kube-proxy, and the node is uncordoned once it
		// is Ready at the new version.
		drained, msg, err := r.drainForUpdate(ctx, cs, m, cluster, node)
		if err != nil {
			return ctrl.Result{}, err
		}
		if !drained {
			setCond(status, m.Generation, "NodeReady", false, lotsev1.ReasonUpdatingInPlace, "draining before the in-place update to "+m.Spec.Version+": "+msg)
			return ctrl.Result{RequeueAfter: time.Second}, r.writeStatus(ctx, m, status)
		}
	}
	st, err := r.Provider.Ensure(ctx, lm)
	if err != nil {
		status.FailureMessage = err.Error()
		setCond(status, m.Generation, "NodeReady", false, "ProvisioningFailed", err.Error())
		return ctrl.Result{}, errors.Join(err, r.writeStatus(ctx, m, status))
	}
	// The provider brought the machine to this generation's spec.
	status.ObservedGeneration = m.Generation
	status.FailureMessage = ""
	status.ProviderID = st.ProviderID
	status.TrustDigest = st.TrustDigest
	status.LocalVolumesPath = st.LocalVolumesPath
	status.Addresses = []lotsev1.MachineAddress{{Type: corev1.NodeInternalIP, Address: st.Address}}
	provisioningStarts := status.Phase == lotsev1.MachinePending
	if provisioningStarts {
		status.Phase = lotsev1.MachineProvisioning
	}
	if err := approveServingCSRs(ctx, cs, m.Name, st.Address); err != nil {
		log.FromContext(ctx).Error(err, "approve kubelet serving certificate")
	}
	if node != nil {
		if err := ensureNodeLabels(ctx, cs, node, lm.Labels); err != nil {
			return ctrl.Result{}, err
		}
	}
	ready, why := nodeReady(node)
	if !ready && !lm.BridgeCNI && node != nil {
		// The plugin's agents are what make the node Ready; say so, since
		// on a host without registry access they never start.
		why = fmt.Sprintf("%s (spec.networking.plugin %s: its agents must start on the node, from images the node pulls from upstream's registry)", why, cluster.Spec.Networking.Plugin)
	}
	if node != nil {
		status.NodeName = node.Name
	}
	// exec, logs and metrics need the kubelet's serving certificate, which
	// the kubelet only gets after it registered: not Ready before that.
	if ready && !st.HasServingCertificate {
		ready, why = false, "waiting for the kubelet serving certificate"
	}
	if !st.ProcessesReady {
		ready, why = false, st.Message
	}
	reason := map[bool]string{true: "KubeletReady", false: "NodeNotReady"}[ready]
	if node != nil && node.Annotations[InPlaceUpdateAnnotation] != "" {
		// The last step of an in-place update: uncordon once the node
		// is Ready at the new version.
		done, err := r.finishUpdate(ctx, cs, m, node, ready)
		if err != nil {
			return ctrl.Result{}, err
		}
		if !done {
			ready, reason, why = false, lotsev1.ReasonUpdatingInPlace, "updating in place to "+m.Spec.Version+": "+why
		}
	}
	wasReady := meta.IsStatusConditionTrue(status.Conditions, "NodeReady")
	setCond(status, m.Generation, "NodeReady", ready, reason, why)
	if provisioningStarts && !ready {
		// Health checks time a new machine's startup from here, not from
		// its creation: waiting for binaries, images or the control plane
		// is not the machine's fault.
		meta.FindStatusCondition(status.Conditions, "NodeReady").LastTransitionTime = metav1.Now()
	}
	if wasReady && !ready {
		// The node itself went NotReady: date the condition from when it
		// did, not from when this reconcile noticed (health checks time
		// their timeouts from it).
		if since, ok := nodeNotReadySince(node); ok {
			cond := meta.FindStatusCondition(status.Conditions, "NodeReady")
			if since.Before(&cond.LastTransitionTime) {
				cond.LastTransitionTime = since
			}
		}
	}
	if ready {
		status.Phase = lotsev1.MachineRunning
		// The kubelet has its own certificate now; the token has done its job.
		if err := cs.CoreV1().Secrets("kube-system").Delete(ctx, "bootstrap-token-"+bootstrapTokenID(m.Name), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
	}
	if err := r.writeStatus(ctx, m, status); err != nil {
		return ctrl.Result{}, err
	}
	if !ready {
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	return ctrl.Result{RequeueAfter: 15 * time.Second}, nil
}

// stop powers a machine off; its node goes NotReady and the cloud
// controller manager taints it as shut down.
func (r *Reconciler) stop(ctx context.Context, m *lotsev1.Machine, c *lotsev1.Cluster, ref clusterref.Ref, status *lotsev1.MachineStatus) error {
	nodesCIDR := c.Status.NodesCIDR
	if nodesCIDR == "" {
		nodesCIDR = c.Spec.Networking.Nodes
	}
	if err := r.Provider.Stop(ctx, &machine.Spec{Cluster: ref, Name: m.Name, Index: int(m.Spec.Index), NodesCIDR: nodesCIDR}); err != nil {
		setCond(status, m.Generation, "NodeReady", false, "StopFailed", err.Error())
		return errors.Join(err, r.writeStatus(ctx, m, status))
	}
	status.ObservedGeneration = m.Generation
	status.Phase = lotsev1.MachineStopped
	setCond(status, m.Generation, "NodeReady", false, "MachineStopped", "spec.stopped is set: the machine is powered off")
	return r.writeStatus(ctx, m, status)
}

// machine assembles what the provider needs. A nil machine with a message
// means "not yet" (binaries or images still building, control plane not up).
func (r *Reconciler) machine(ctx context.Context, m *lotsev1.Machine, c *lotsev1.Cluster, ref clusterref.Ref) (*machine.Spec, kubernetes.Interface, string, error) {
	rel, err := releases.Lookup(m.Spec.Version)
	if err != nil {
		return nil, nil, "", err
	}
	bins, err := r.Releases.Binaries(rel)
	if err != nil {
		return nil, nil, "waiting for kubernetes " + rel.Version + " binaries", nil
	}
	pause, tarballs, ready, err := r.Images(ctx, rel.Version)
	if err != nil {
		return nil, nil, "", err
	}
	if !ready {
		return nil, nil, "waiting for node images to be built", nil
	}
	cp := controlplane.Spec{Key: ref.Key()}
	access, err := r.Backend.NodeAccess(cp)
	if err != nil {
		return nil, nil, "waiting for the control plane", nil
	}
	kc, err := r.Backend.AdminKubeconfig(cp)
	if err != nil {
		return nil, nil, "waiting for the control plane", nil
	}
	cs, err := r.Tenants.For(ref.Key(), kc)
	if err != nil {
		return nil, nil, "", err
	}
	class, err := machine.LookupClass(m.Spec.MachineClass)
	if err != nil {
		return nil, nil, "", err
	}
	spec := &machine.Spec{
		Class:       class,
		Cluster:     ref,
		Name:        m.Name,
		Index:       int(m.Spec.Index),
		NodesCIDR:   access.NodesCIDR,
		Binaries:    bins,
		PKI:         r.Backend.PKI(ref.Key()),
		APIServer:   access.APIServer,
		ClusterDNS:  addons.ClusterDNS(c.Spec.Networking.Services),
		ClusterCIDR: c.Spec.Networking.Pods,
		ServiceCIDR: c.Spec.Networking.Services,
		Egress:      c.Spec.Networking.Egress == lotsev1.EgressAllow,
		BridgeCNI:   c.Spec.Networking.Plugin == "" || c.Spec.Networking.Plugin == lotsev1.NetworkPluginBridge,
		PauseImage:  pause,
		Images:      tarballs,
		Labels: map[string]string{
			lotsev1.LabelCluster: c.Name, lotsev1.LabelPool: m.Spec.Pool, lotsev1.LabelMachine: m.Name,
		},
	}
	for _, pool := range c.Spec.Workers {
		if pool.Name != m.Spec.Pool {
			continue
		}
		for k, v := range pool.Labels {
			spec.Labels[k] = string(v)
		}
		for _, t := range pool.Taints {
			spec.Taints = append(spec.Taints, machine.Taint{Key: t.Key, Value: t.Value, Effect: t.Effect})
		}
		if zone := pool.Zone(m.Spec.Index); zone != "" {
			spec.Labels[corev1.LabelTopologyZone] = zone
		}
	}
	return spec, cs, "", nil
}

// ensureBootstrapToken creates a short-lived bootstrap token for a machine
// whose kubelet has no client certificate yet.
func ensureBootstrapToken(ctx context.Context, cs kubernetes.Interface, machineName string) (string, error) {
	id := bootstrapTokenID(machineName)
	name := "bootstrap-token-" + id
	sec, err := cs.CoreV1().Secrets("kube-system").Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		return id + "." + string(sec.Data["token-secret"]), nil
	}
	if !apierrors.IsNotFound(err) {
		return "", err
	}
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	secret := hex.EncodeToString(b) // 16 lowercase hex characters, as the token format wants
	sec = &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system"},
		Type:       corev1.SecretTypeBootstrapToken,
		StringData: map[string]string{
			"token-id":                       id,
			"token-secret":                   secret,
			"description":                    "lotse: joins machine " + machineName,
			"expiration":                     time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339),
			"usage-bootstrap-authentication": "true",
			"usage-bootstrap-signing":        "true",
			"auth-extra-groups":              lotsev1.BootstrapGroup,
		},
	}
	if _, err := cs.CoreV1().Secrets("kube-system").Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	return id + "." + secret, nil
}

// bootstrapTokenID is 6 characters [a-z0-9], stable per machine name.
func bootstrapTokenID(machineName string) string {
	sum := sha256.Sum256([]byte(machineName))
	return hex.EncodeToString(sum[:3])
}

// approveServingCSRs approves the kubelet serving certificate requests of
// this node when they ask for exactly its own name and address.
func approveServingCSRs(ctx context.Context, cs kubernetes.Interface, nodeName, address string) error {
	list, err := cs.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range list.Items {
		csr := &list.Items[i]
		if csr.Spec.SignerName != certificatesv1.KubeletServingSignerName || csr.Spec.Username != "system:node:"+nodeName || certrequest.Decided(csr) {
			continue
		}
		block, _ := pem.Decode(csr.Spec.Request)
		if block == nil {
			continue
		}
		req, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil {
			continue
		}
		ok := req.Subject.CommonName == "system:node:"+nodeName
		for _, ip := range req.IPAddresses {
			ok = ok && ip.String() == address
		}
		for _, d := range req.DNSNames {
			ok = ok && d == nodeName
		}
		if !ok {
			continue
		}
		csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue,
			Reason: "LotseMachineMatches", Message: "name and address belong to machine " + nodeName,
		})
		if _, err := cs.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// readyCondition is a node's Ready condition (nil without one).
func readyCondition(n *corev1.Node) *corev1.NodeCondition {
	if n == nil {
		return nil
	}
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeReady {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

func nodeReady(n *corev1.Node) (bool, string) {
	if n == nil {
		return false, "the node has not registered yet"
	}
	if c := readyCondition(n); c != nil {
		return c.Status == corev1.ConditionTrue, c.Message
	}
	return false, "the node reports no Ready condition yet"
}

// nodeNotReadySince is when a node's Ready condition left True, if it did.
func nodeNotReadySince(n *corev1.Node) (metav1.Time, bool) {
	if c := readyCondition(n); c != nil && c.Status != corev1.ConditionTrue {
		return c.LastTransitionTime, !c.LastTransitionTime.IsZero()
	}
	return metav1.Time{}, false
}

// nodeUnreachable: the node's kubelet stopped reporting (Ready Unknown).
func nodeUnreachable(ctx context.Context, cs kubernetes.Interface, name string) bool {
	node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false
	}
	c := readyCondition(node)
	return c != nil && c.Status == corev1.ConditionUnknown
}

func (r *Reconciler) reconcileDelete(ctx context.Context, m *lotsev1.Machine, ref clusterref.Ref) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(m, lotsev1.MachineFinalizer) {
		return ctrl.Result{}, nil
	}
	status := m.Status.DeepCopy()
	status.Phase = lotsev1.MachineDeleting
	if err := r.writeStatus(ctx, m, status); err != nil {
		return ctrl.Result{}, err
	}

	var cs kubernetes.Interface
	if kc, err := r.Backend.AdminKubeconfig(controlplane.Spec{Key: ref.Key()}); err == nil {
		cs, _ = r.Tenants.For(ref.Key(), kc)
	}
	// A cluster that is being deleted needs no draining: its workloads go with it.
	cluster := &lotsev1.Cluster{}
	clusterGoing := r.Client.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Spec.Cluster}, cluster) != nil ||
		!cluster.DeletionTimestamp.IsZero()
	// A stopped machine's pods cannot end gracefully: no kubelet runs to
	// end them. Its Node's deletion lets the pod garbage collector remove them.
	// Nor can an unreachable node's (its kubelet stopped reporting, the
	// usual reason a health check replaces a machine).
	if cs != nil && !clusterGoing && !m.Spec.Stopped && !nodeUnreachable(ctx, cs, m.Name) {
		timeout, hasTimeout := drainTimeout(cluster, m.Spec.Pool)
		force := hasTimeout && time.Since(m.DeletionTimestamp.Time) >= timeout
		drained, blocked, msg, err := drain.Node(ctx, cs, m.Name, force)
		if err != nil {
			return ctrl.Result{}, err
		}
		if !drained {
			was := meta.FindStatusCondition(status.Conditions, "Drained")
			reason := "Draining"
			if blocked {
				reason = "DrainBlocked"
				if was == nil || was.Reason != reason {
					note := msg + "; the drain waits for the budget to allow it"
					if hasTimeout {
						note += fmt.Sprintf(" (at most %s, the pool's drainTimeout)", timeout)
					} else {
						note += " (the pool sets no drainTimeout)"
					}
					r.event(m, corev1.EventTypeWarning, "DrainBlocked", "Drain", "%s", note)
				}
			}
			if force {
				reason = "DrainForced"
				if was == nil || was.Reason != reason {
					r.event(m, corev1.EventTypeWarning, "DrainForced", "Drain", "drainTimeout %s passed: deleting the remaining pods without eviction: %s", timeout, msg)
				}
			}
			setCond(status, m.Generation, "Drained", false, reason, msg)
			return ctrl.Result{RequeueAfter: time.Second}, r.writeStatus(ctx, m, status)
		}
	}
	// Deletion needs only the cluster, the name and the index: it works
	// even when the control plane is gone.
	if err := r.Provider.Delete(ctx, &machine.Spec{Cluster: ref, Name: m.Name, Index: int(m.Spec.Index)}); err != nil {
		return ctrl.Result{}, err
	}
	if cs != nil {
		_ = cs.CoreV1().Secrets("kube-system").Delete(ctx, "bootstrap-token-"+bootstrapTokenID(m.Name), metav1.DeleteOptions{})
	}
	if cs != nil {
		if err := cs.CoreV1().Nodes().Delete(ctx, m.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			log.FromContext(ctx).Error(err, "delete node object")
		}
	}
	controllerutil.RemoveFinalizer(m, lotsev1.MachineFinalizer)
	if err := r.Client.Update(ctx, m); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, nil
}

// drainTimeout is the pool's drainTimeout, if it sets one.
func drainTimeout(c *lotsev1.Cluster, pool string) (time.Duration, bool) {
	for _, p := range c.Spec.Workers {
		if p.Name == pool && p.DrainTimeout != "" {
			d, err := time.ParseDuration(p.DrainTimeout)
			return d, err == nil
		}
	}
	return 0, false
}

func (r *Reconciler) event(m *lotsev1.Machine, kind, reason, action, note string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(m, nil, kind, reason, action, note, args...)
	}
}

func setCond(status *lotsev1.MachineStatus, gen int64, typ string, ok bool, reason, msg string) {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	if msg == "" {
		msg = reason
	}
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen})
}

func (r *Reconciler) writeStatus(ctx context.Context, m *lotsev1.Machine, status *lotsev1.MachineStatus) error {
	if equalMachineStatus(&m.Status, status) {
		return nil
	}
	before := m.DeepCopy()
	m.Status = *status
	return patch.Status(ctx, r.Client, m, before)
}

func equalMachineStatus(a, b *lotsev1.MachineStatus) bool {
	if a.Phase != b.Phase || a.ProviderID != b.ProviderID || a.NodeName != b.NodeName || a.FailureMessage != b.FailureMessage || a.LocalVolumesPath != b.LocalVolumesPath || a.TrustDigest != b.TrustDigest ||
		a.ObservedGeneration != b.ObservedGeneration || !slices.Equal(a.Addresses, b.Addresses) || len(a.Conditions) != len(b.Conditions) {
		return false
	}
	for i := range a.Conditions {
		x, y := a.Conditions[i], b.Conditions[i]
		if x.Type != y.Type || x.Status != y.Status || x.Reason != y.Reason || x.Message != y.Message {
			return false
		}
	}
	return true
}

// ensureNodeLabels puts the pool's labels on the node through the API. The
// kubelet may set only some labels on itself (NodeRestriction refuses
// node-role.kubernetes.io/* and other kubernetes.io keys), and labels
// changed on the pool later must reach existing nodes too.
func ensureNodeLabels(ctx context.Context, cs kubernetes.Interface, node *corev1.Node, labels map[string]string) error {
	missing := false
	for k, v := range labels {
		if node.Labels[k] != v {
			missing = true
		}
	}
	if !missing {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	if err != nil {
		return err
	}
	_, err = cs.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "lotse"})
	return err
}
