package cluster

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/restmapper"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/controller/patch"
	"github.com/lotse/lotse/internal/controlplane"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// Credential rotation in two phases, as Gardener's. Phase 1 (start) adds
// the new credential and makes it the one in use while the old one is
// still accepted; phase 2 (complete) removes the old one. Each phase is a
// sequence of steps recorded in status.credentials.rotation; a step is a
// stage the backend applies to the control plane's credentials (an
// idempotent change of files), which the ordinary rollout then brings to
// every instance one at a time. The next step starts only once every task
// is done, so a lotse killed at any point goes on from the recorded step.
//
// Etcd encryption key, phase 1: add (every API server can read the new
// key), promote (the new key encrypts), rewrite (every encrypted object
// written again, now with the new key); phase 2: drop the old key.
// Service-account key, phase 1: add (a new key signs, the old one still
// verifies); phase 2: drop the old one.

// Cluster CA, phase 1: add (every server and client trusts the new CA
// beside the old one: the control plane, the nodes, kube-root-ca.crt),
// reissue (the new CA signs; every certificate is issued again, the
// serving ones with the new CA certified by the old so old kubeconfigs
// still verify them; kubelets get client certificates of the new CA;
// kubeconfigs are new; managed addons restart to read the bundle);
// phase 2: drop (the old CA goes; what it signed or trusts alone fails).
// Each step waits until every machine runs with it.

// Rotation kinds, as the CLI names them.
const (
	KindServiceAccountKey = "service-account-key"
	KindEtcdEncryptionKey = "etcd-encryption-key"
	KindCA                = "ca"
)

// RotationKinds are the kinds a rotate-credentials operation covers.
var RotationKinds = []string{KindCA, KindServiceAccountKey, KindEtcdEncryptionKey}

// rotationRequest reads the operation annotation.
func rotationRequest(op string) (kinds []string, complete, ok bool) {
	switch op {
	case lotsev1.OperationRotateCredentialsStart:
		return RotationKinds, false, true
	case lotsev1.OperationRotateCredentialsComplete:
		return RotationKinds, true, true
	case lotsev1.OperationRotateServiceAccountKeyStart:
		return []string{KindServiceAccountKey}, false, true
	case lotsev1.OperationRotateServiceAccountKeyDone:
		return []string{KindServiceAccountKey}, true, true
	case lotsev1.OperationRotateEtcdEncryptionKeyStart:
		return []string{KindEtcdEncryptionKey}, false, true
	case lotsev1.OperationRotateEtcdEncryptionKeyDone:
		return []string{KindEtcdEncryptionKey}, true, true
	case lotsev1.OperationRotateCAStart:
		return []string{KindCA}, false, true
	case lotsev1.OperationRotateCADone:
		return []string{KindCA}, true, true
	}
	return nil, false, false
}

// rotationOf returns the status entry of a kind, creating it if asked.
func rotationOf(status *lotsev1.ClusterStatus, kind string, create bool) **lotsev1.RotationStatus {
	if status.Credentials == nil {
		if !create {
			var none *lotsev1.RotationStatus
			return &none
		}
		status.Credentials = &lotsev1.CredentialsStatus{}
	}
	switch kind {
	case KindServiceAccountKey:
		return &status.Credentials.Rotation.ServiceAccountKey
	case KindCA:
		return &status.Credentials.Rotation.CertificateAuthorities
	}
	return &status.Credentials.Rotation.EtcdEncryptionKey
}

// acceptRotation turns a rotation request into status (phase and first
// step) or refuses it with an event naming the fix; the annotation goes
// either way.
func (r *Reconciler) acceptRotation(ctx context.Context, c *lotsev1.Cluster, status *lotsev1.ClusterStatus, upgrading bool) error {
	op := c.Annotations[lotsev1.OperationAnnotation]
	kinds, complete, ok := rotationRequest(op)
	if !ok {
		return nil
	}
	refuse := func(msg string) error {
		r.event(c, corev1.EventTypeWarning, "RotationRefused", "Rotate", "%s refused: %s", op, msg)
		return patch.RemoveAnnotationIf(ctx, r.Client, c, lotsev1.OperationAnnotation, op)
	}
	switch {
	case c.Hibernating() || hibernationStarted(status):
		return refuse("the cluster is hibernated; wake it first (lotse cluster wake " + c.Name + ")")
	case upgrading:
		return refuse("a version change is running; rotate once it is done")
	case c.Annotations[lotsev1.RestoreAnnotation] != "":
		return refuse("a restore is running; rotate once it is done")
	case status.KubernetesVersion == "":
		return refuse("the cluster has not been created yet")
	}
	if complete {
		kinds = CompletableKinds(status, kinds)
	}
	// Check every kind first: a request is taken whole or not at all.
	for _, kind := range kinds {
		rs := *rotationOf(status, kind, false)
		phase := ""
		if rs != nil {
			phase = rs.Phase
		}
		switch {
		case !complete && phase == lotsev1.RotationPrepared:
			return refuse(fmt.Sprintf("the %s rotation is prepared; complete it first (lotse cluster rotate %s %s --complete)", kind, c.Name, kind))
		case !complete && phase == lotsev1.RotationCompleting:
			return refuse(fmt.Sprintf("the %s rotation is completing; start a new one after it", kind))
		case complete && phase != lotsev1.RotationPrepared && phase != lotsev1.RotationCompleting:
			switch phase {
			case lotsev1.RotationPreparing:
				return refuse(fmt.Sprintf("the %s rotation is still preparing; complete it once status.credentials.rotation says Prepared", kind))
			case lotsev1.RotationCompleted:
				return refuse(fmt.Sprintf("the last %s rotation is completed; start a new one first (lotse cluster rotate %s %s)", kind, c.Name, kind))
			}
			return refuse(fmt.Sprintf("no %s rotation was started; start one first (lotse cluster rotate %s %s)", kind, c.Name, kind))
		}
	}
	now := metav1.Now()
	for _, kind := range kinds {
		slot := rotationOf(status, kind, true)
		rs := *slot
		switch {
		case !complete && (rs == nil || rs.Phase != lotsev1.RotationPreparing):
			next := &lotsev1.RotationStatus{Phase: lotsev1.RotationPreparing, Step: "add", LastInitiationTime: &now}
			if rs != nil {
				next.LastCompletionTime = rs.LastCompletionTime
			}
			*slot = next
			r.event(c, corev1.EventTypeNormal, "RotationStarted", "Rotate", "%s rotation: phase 1 started (new credential added and used, the old one still accepted)", kind)
		case complete && rs.Phase == lotsev1.RotationPrepared:
			rs.Phase, rs.Step, rs.LastCompletionTriggeredTime = lotsev1.RotationCompleting, "drop", &now
			r.event(c, corev1.EventTypeNormal, "RotationCompleting", "Rotate", "%s rotation: phase 2 started (the old credential is removed)", kind)
		}
	}
	if err := r.writeStatus(ctx, c, status); err != nil {
		return err
	}
	return patch.RemoveAnnotationIf(ctx, r.Client, c, lotsev1.OperationAnnotation, op)
}

// followEncryptionProvider starts an etcd-encryption-key rotation when
// spec.encryption.provider names another provider than the key that
// encrypts: its new key has the new provider, every encrypted object is
// rewritten with it, and completing the rotation (as any other) removes
// the old key. A prepared rotation is completed first.
func (r *Reconciler) followEncryptionProvider(c *lotsev1.Cluster, status *lotsev1.ClusterStatus, cp controlplane.Status) {
	want := c.Spec.Encryption.Provider
	if want == "" {
		want = "aescbc"
	}
	if cp.EncryptionProvider == "" || c.Annotations[lotsev1.RestoreAnnotation] != "" {
		return // a restore brings keys of its own: decide after it
	}
	if cp.EncryptionProvider == want {
		msg := "the data is encrypted with " + want
		if rs := *rotationOf(status, KindEtcdEncryptionKey, false); rs != nil && rs.Phase == lotsev1.RotationPrepared {
			msg += "; the replaced key still decrypts until the etcd-encryption-key rotation is completed"
		}
		setCondition(status, c.Generation, lotsev1.ConditionEncryptionProviderCurrent, true, "Current", msg)
		return
	}
	slot := rotationOf(status, KindEtcdEncryptionKey, true)
	rs := *slot
	if rs != nil && rs.Phase == lotsev1.RotationPrepared {
		setCondition(status, c.Generation, lotsev1.ConditionEncryptionProviderCurrent, false, "RotationPrepared",
			fmt.Sprintf("spec.encryption.provider is %s, the data is encrypted with %s: complete the prepared etcd-encryption-key rotation first (lotse cluster rotate %s etcd-encryption-key --complete), then a rotation to %s starts", want, cp.EncryptionProvider, c.Name, want))
		return
	}
	now := metav1.Now()
	next := &lotsev1.RotationStatus{Phase: lotsev1.RotationPreparing, Step: "add", LastInitiationTime: &now}
	if rs != nil {
		next.LastCompletionTime = rs.LastCompletionTime
	}
	*slot = next
	setCondition(status, c.Generation, lotsev1.ConditionEncryptionProviderCurrent, false, "Rotating",
		fmt.Sprintf("changing the encryption provider from %s to %s: a new %s key is added, made primary and every encrypted object rewritten", cp.EncryptionProvider, want, want))
	r.event(c, corev1.EventTypeNormal, "RotationStarted", "Rotate", "etcd-encryption-key rotation: phase 1 started to change the encryption provider from %s to %s", cp.EncryptionProvider, want)
}

// RotationStatusOf is a kind's rotation in status (nil if none ran).
func RotationStatusOf(status *lotsev1.ClusterStatus, kind string) *lotsev1.RotationStatus {
	return *rotationOf(status, kind, false)
}

// CompletableKinds narrows a request to complete several kinds to those
// that are Prepared, if any is: `all --complete` completes what was
// started (a rotation from before a kind existed, or of one kind alone).
func CompletableKinds(status *lotsev1.ClusterStatus, kinds []string) []string {
	if len(kinds) < 2 {
		return kinds
	}
	var prepared []string
	for _, k := range kinds {
		if rs := *rotationOf(status, k, false); rs != nil && rs.Phase == lotsev1.RotationPrepared {
			prepared = append(prepared, k)
		}
	}
	if len(prepared) == 0 {
		return kinds
	}
	return prepared
}

// rotationStages is what the control plane is to apply for the running
// rotations.
func rotationStages(status *lotsev1.ClusterStatus) controlplane.Rotation {
	var out controlplane.Rotation
	if rs := *rotationOf(status, KindServiceAccountKey, false); rs != nil {
		switch rs.Phase {
		case lotsev1.RotationPreparing:
			out.ServiceAccountKey = rs.Step // add, then promote
		case lotsev1.RotationCompleting:
			out.ServiceAccountKey = "drop"
		}
	}
	if rs := *rotationOf(status, KindCA, false); rs != nil {
		switch rs.Phase {
		case lotsev1.RotationPreparing:
			out.CA = rs.Step // add, then reissue
		case lotsev1.RotationCompleting:
			out.CA = "drop"
		}
	}
	if rs := *rotationOf(status, KindEtcdEncryptionKey, false); rs != nil {
		switch rs.Phase {
		case lotsev1.RotationPreparing:
			out.EncryptionKey = rs.Step
			if rs.Step == "rewrite" {
				out.EncryptionKey = "promote"
			}
		case lotsev1.RotationCompleting:
			out.EncryptionKey = "drop"
		}
	}
	return out
}

// advanceRotations moves each running rotation to its next step once the
// control plane runs the current one everywhere (every task done).
func (r *Reconciler) advanceRotations(ctx context.Context, c *lotsev1.Cluster, status *lotsev1.ClusterStatus, spec controlplane.Spec) error {
	now := metav1.Now()
	if rs := *rotationOf(status, KindCA, false); rs != nil && (rs.Phase == lotsev1.RotationPreparing || rs.Phase == lotsev1.RotationCompleting) {
		waiting, err := r.machinesBehindTrust(ctx, c, spec)
		if err != nil {
			return err
		}
		switch {
		case len(waiting) > 0:
			// The nodes follow within a machine reconcile; the rotation
			// is requeued every second while it runs.
			log.FromContext(ctx).Info("CA rotation: waiting for machines to take the step", "step", rs.Step, "machines", waiting)
			if status.LastOperation != nil {
				status.LastOperation.Description = fmt.Sprintf("ca rotation (%s %s): waiting for machines %s to run with the new trust", rs.Phase, rs.Step, strings.Join(waiting, ", "))
			}
		case rs.Phase == lotsev1.RotationPreparing && rs.Step == "add":
			rs.Step = "reissue"
		case rs.Phase == lotsev1.RotationPreparing:
			rs.Phase, rs.Step, rs.LastInitiationFinishedTime = lotsev1.RotationPrepared, "", &now
			r.event(c, corev1.EventTypeNormal, "RotationPrepared", "Rotate", "ca rotation prepared: every certificate is signed by the new CA and every party trusts both; old kubeconfigs keep working until it is completed (download the new one: lotse cluster kubeconfig %s)", c.Name)
		case rs.Phase == lotsev1.RotationCompleting:
			rs.Phase, rs.Step, rs.LastCompletionTime = lotsev1.RotationCompleted, "", &now
			r.event(c, corev1.EventTypeNormal, "RotationCompleted", "Rotate", "ca rotation completed: the old CA is trusted nowhere; kubeconfigs from before the rotation no longer work")
		}
	}
	if rs := *rotationOf(status, KindServiceAccountKey, false); rs != nil {
		switch {
		case rs.Phase == lotsev1.RotationPreparing && rs.Step == "add":
			// Every API server accepts the new key: now it may sign.
			rs.Step = "promote"
		case rs.Phase == lotsev1.RotationPreparing:
			rs.Phase, rs.Step, rs.LastInitiationFinishedTime = lotsev1.RotationPrepared, "", &now
			r.event(c, corev1.EventTypeNormal, "RotationPrepared", "Rotate", "service-account-key rotation prepared: new tokens are signed with the new key, old tokens still work until it is completed")
		case rs.Phase == lotsev1.RotationCompleting:
			rs.Phase, rs.Step, rs.LastCompletionTime = lotsev1.RotationCompleted, "", &now
			r.event(c, corev1.EventTypeNormal, "RotationCompleted", "Rotate", "service-account-key rotation completed: tokens signed with the old key no longer work")
		}
	}
	if rs := *rotationOf(status, KindEtcdEncryptionKey, false); rs != nil {
		switch {
		case rs.Phase == lotsev1.RotationPreparing && rs.Step == "add":
			rs.Step = "promote"
		case rs.Phase == lotsev1.RotationPreparing && rs.Step == "promote":
			rs.Step = "rewrite"
		case rs.Phase == lotsev1.RotationPreparing && rs.Step == "rewrite":
			start := time.Now()
			n, err := r.rewriteEncrypted(ctx, c, spec)
			if err != nil {
				err = fmt.Errorf("rewriting the encrypted resources with the new key (tried again): %w", err)
				r.event(c, corev1.EventTypeWarning, "RotationRetrying", "Rotate", "etcd-encryption-key rotation: %v", err)
				return err
			}
			rs.Phase, rs.Step, rs.LastInitiationFinishedTime = lotsev1.RotationPrepared, "", &now
			r.event(c, corev1.EventTypeNormal, "RotationPrepared", "Rotate", "etcd-encryption-key rotation prepared: %d objects rewritten with the new key in %s; the old key still decrypts until it is completed", n, time.Since(start).Round(time.Millisecond))
		case rs.Phase == lotsev1.RotationCompleting:
			rs.Phase, rs.Step, rs.LastCompletionTime = lotsev1.RotationCompleted, "", &now
			r.event(c, corev1.EventTypeNormal, "RotationCompleted", "Rotate", "etcd-encryption-key rotation completed: the old key is gone")
		}
	}
	return nil
}

// rotationRunning says whether a rotation has a step left to apply.
func rotationRunning(status *lotsev1.ClusterStatus) bool {
	for _, kind := range RotationKinds {
		if rs := *rotationOf(status, kind, false); rs != nil && (rs.Phase == lotsev1.RotationPreparing || rs.Phase == lotsev1.RotationCompleting) {
			return true
		}
	}
	return false
}

// rewriteEncrypted writes every object of the encrypted resources again
// unchanged: the API server stores a value read with a key that is not
// the first one anew (with the first), so afterwards etcd holds only
// values encrypted with the new key.
func (r *Reconciler) rewriteEncrypted(ctx context.Context, c *lotsev1.Cluster, spec controlplane.Spec) (int, error) {
	kc, err := r.Backend.AdminKubeconfig(spec)
	if err != nil {
		return 0, err
	}
	cs, err := r.Tenants.For(spec.Key, kc)
	if err != nil {
		return 0, err
	}
	dyn, err := r.Tenants.Dynamic(spec.Key, kc)
	if err != nil {
		return 0, err
	}
	resources := append([]string{"secrets"}, spec.EncryptedResources...)
	var mapper *restmapper.DeferredDiscoveryRESTMapper
	n := 0
	for _, res := range resources {
		gvr := schema.GroupVersionResource{Version: "v1", Resource: res}
		if res != "secrets" && res != "configmaps" {
			if mapper == nil {
				mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cs.Discovery()))
			}
			resource, group, _ := strings.Cut(res, ".")
			found, err := mapper.ResourceFor(schema.GroupVersionResource{Group: group, Resource: resource})
			if meta.IsNoMatchError(err) {
				continue // not served (a CRD not installed): nothing stored
			}
			if err != nil {
				return n, fmt.Errorf("find resource %s: %w", res, err)
			}
			gvr = found
		}
		cont := ""
		for {
			list, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 500, Continue: cont})
			if err != nil {
				return n, fmt.Errorf("list %s: %w", gvr.Resource, err)
			}
			for i := range list.Items {
				obj := &list.Items[i]
				ri := dyn.Resource(gvr).Namespace(obj.GetNamespace())
				if _, err := ri.Update(ctx, obj, metav1.UpdateOptions{}); err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
					// A conflict or a deletion means someone wrote it
					// meanwhile: with the new key.
					return n, fmt.Errorf("rewrite %s %s/%s: %w", gvr.Resource, obj.GetNamespace(), obj.GetName(), err)
				}
				n++
			}
			cont = list.GetContinue()
			if cont == "" {
				break
			}
		}
	}
	return n, nil
}

// machinesBehindTrust names the cluster's machines whose node does not run
// with the control plane's current trust yet (see pki.NodeTrustDigest).
func (r *Reconciler) machinesBehindTrust(ctx context.Context, c *lotsev1.Cluster, spec controlplane.Spec) ([]string, error) {
	want, err := r.Backend.PKI(spec.Key).NodeTrustDigest()
	if err != nil {
		return nil, err
	}
	list := &lotsev1.MachineList{}
	if err := r.Client.List(ctx, list, client.InNamespace(c.Namespace), client.MatchingLabels{lotsev1.LabelCluster: c.Name}); err != nil {
		return nil, err
	}
	var behind []string
	for _, m := range list.Items {
		// A stopped machine takes the current trust when it starts: its
		// certificates are issued again before its kubelet runs.
		if m.DeletionTimestamp == nil && !m.Spec.Stopped && m.Status.TrustDigest != want {
			behind = append(behind, m.Name)
		}
	}
	return behind, nil
}
