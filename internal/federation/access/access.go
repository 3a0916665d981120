// Package access gives a fleet its own, least-privileged identity in a
// member cluster that joins in push mode with somebody's kubeconfig: a
// ServiceAccount bound to a ClusterRole with exactly what propagation
// needs, and a token for it. The kubeconfig given at join time is used
// once, for that, and never stored; unjoining revokes the identity.
package access

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/lotse/lotse/internal/federation/propagation"
)

// Namespace holds the fleets' ServiceAccounts in a member.
const Namespace = "lotse-fleet"

// Name is the name of a fleet's ClusterRole, ClusterRoleBinding and
// ServiceAccount in a member: one identity per fleet and member name, so a
// cluster may belong to several fleets.
func Name(fleetNamespace, fleet, member string) string {
	return "lotse-fleet." + fleetNamespace + "." + fleet + "." + member
}

// Rules are what a fleet needs in a member: to manage the kinds it
// propagates (CustomResourceDefinitions among them), to read nodes
// (health, DNS answers, room) and EndpointSlices (DNS answers), to list
// what a namespace holds, and to delete its own identity when it leaves.
// It cannot exec into pods, grant rights, or change nodes, RBAC (but its
// own role's deletion), webhooks or API services.
//
// CRDs: it may create them, but change or delete only the fleet's CRDs it
// is given (custom: those the fleet holds when the member joins), and it
// may manage the objects of exactly those kinds. A kind in a group of the
// Kubernetes project or of Lotse is never granted this way (CustomGroup).
func Rules(name string, custom ...Custom) []rbacv1.PolicyRule {
	all := []string{"get", "list", "watch", "create", "update", "patch", "delete"}
	byGroup := map[string][]string{}
	var groups []string
	for _, k := range propagation.Kinds {
		if k.GVR.Group == crdGroup && k.GVR.Resource == crdResource {
			continue // below
		}
		if _, ok := byGroup[k.GVR.Group]; !ok {
			groups = append(groups, k.GVR.Group)
		}
		byGroup[k.GVR.Group] = append(byGroup[k.GVR.Group], k.GVR.Resource)
	}
	var rules []rbacv1.PolicyRule
	for _, g := range groups {
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{g}, Resources: byGroup[g], Verbs: all})
	}
	rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{crdGroup}, Resources: []string{crdResource},
		Verbs: []string{"get", "list", "watch", "create"}})
	var crds []string
	kinds := map[string][]string{}
	var customGroups []string
	for _, c := range custom {
		if !CustomGroup(c.Group) || c.Resource == "" || c.CRD != c.Resource+"."+c.Group || slices.Contains(crds, c.CRD) {
			continue
		}
		crds = append(crds, c.CRD)
		if _, ok := kinds[c.Group]; !ok {
			customGroups = append(customGroups, c.Group)
		}
		kinds[c.Group] = append(kinds[c.Group], c.Resource)
	}
	if len(crds) > 0 {
		slices.Sort(crds)
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{crdGroup}, Resources: []string{crdResource},
			ResourceNames: crds, Verbs: []string{"update", "patch", "delete"}})
	}
	slices.Sort(customGroups)
	for _, g := range customGroups {
		slices.Sort(kinds[g])
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{g}, Resources: kinds[g], Verbs: all})
	}
	return append(rules,
		rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
		// DNS answers only with members whose copy of a Service has a
		// ready endpoint.
		rbacv1.PolicyRule{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
		// Listing every kind (pods for the room among them) lets the fleet
		// tell whether a namespace it made holds anything else before it
		// deletes it; without that it would leave every namespace behind.
		rbacv1.PolicyRule{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"list"}},
		// Leaving: deleting the ClusterRole takes the rest with it
		// (the binding and the ServiceAccount are owned by it).
		rbacv1.PolicyRule{APIGroups: []string{rbacv1.GroupName}, Resources: []string{"clusterroles"}, ResourceNames: []string{name}, Verbs: []string{"delete"}},
		rbacv1.PolicyRule{NonResourceURLs: []string{"/readyz", "/livez", "/version"}, Verbs: []string{"get"}},
	)
}

const (
	crdGroup    = "apiextensions.k8s.io"
	crdResource = "customresourcedefinitions"
)

// Custom is a kind a CRD in the fleet defines.
type Custom struct {
	CRD      string // the CRD's name, RESOURCE.GROUP
	Group    string
	Resource string // plural
}

// CustomGroup reports whether a fleet's identity may be given rights in
// an API group because a CRD of the fleet defines it: not the core group,
// not a group of the Kubernetes project (a CRD may claim one), not Lotse's.
func CustomGroup(group string) bool {
	for _, reserved := range []string{"k8s.io", "kubernetes.io", "x-k8s.io", "lotse.dev"} {
		if group == reserved || strings.HasSuffix(group, "."+reserved) {
			return false
		}
	}
	return strings.Contains(group, ".")
}

// Grant creates (or brings up to date) the fleet's identity in the member
// that admin reaches, and returns a kubeconfig for it. The API server's
// address and CA come from admin; custom are the kinds of the fleet's
// CRDs (see Rules).
func Grant(ctx context.Context, admin *rest.Config, fleetNamespace, fleet, member string, custom ...Custom) ([]byte, error) {
	cs, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return nil, err
	}
	name := Name(fleetNamespace, fleet, member)
	labels := map[string]string{"app.kubernetes.io/managed-by": "lotse", "lotse.dev/fleet": fleet}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Rules: Rules(name, custom...)}
	if role, err = ensureClusterRole(ctx, cs, role); err != nil {
		return nil, fmt.Errorf("the fleet's ClusterRole in the member: %w", err)
	}
	owned := []metav1.OwnerReference{{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole", Name: name, UID: role.UID}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace,
		Labels: map[string]string{"app.kubernetes.io/managed-by": "lotse"}}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("namespace %s in the member: %w", Namespace, err)
	}
	// What exists already must belong to this role: objects of an earlier
	// identity of the same name are on their way out with their role.
	stale := func(what string, err error, get func() (metav1.Object, error)) error {
		if err == nil {
			return nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("the fleet's %s in the member: %w", what, err)
		}
		obj, err := get()
		if err != nil {
			return fmt.Errorf("the fleet's %s in the member: %w", what, err)
		}
		for _, o := range obj.GetOwnerReferences() {
			if o.UID == role.UID && obj.GetDeletionTimestamp() == nil {
				return nil
			}
		}
		return fmt.Errorf("the %s %s of an earlier identity of this member is still being removed; join again in a moment", what, name)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name, Labels: labels, OwnerReferences: owned}}
	_, err = cs.CoreV1().ServiceAccounts(Namespace).Create(ctx, sa, metav1.CreateOptions{})
	if err := stale("ServiceAccount", err, func() (metav1.Object, error) {
		return cs.CoreV1().ServiceAccounts(Namespace).Get(ctx, name, metav1.GetOptions{})
	}); err != nil {
		return nil, err
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, OwnerReferences: owned},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: Namespace, Name: name}}}
	_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{})
	if err := stale("ClusterRoleBinding", err, func() (metav1.Object, error) {
		return cs.RbacV1().ClusterRoleBindings().Get(ctx, name, metav1.GetOptions{})
	}); err != nil {
		return nil, err
	}
	// A token that lives as long as the ServiceAccount (and so as the
	// membership), filled in by the member's token controller.
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name + "-token", Labels: labels, OwnerReferences: owned,
		Annotations: map[string]string{corev1.ServiceAccountNameKey: name}}, Type: corev1.SecretTypeServiceAccountToken}
	_, err = cs.CoreV1().Secrets(Namespace).Create(ctx, secret, metav1.CreateOptions{})
	if err := stale("token Secret", err, func() (metav1.Object, error) {
		return cs.CoreV1().Secrets(Namespace).Get(ctx, secret.Name, metav1.GetOptions{})
	}); err != nil {
		return nil, err
	}
	var token []byte
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		s, err := cs.CoreV1().Secrets(Namespace).Get(ctx, secret.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		token = s.Data[corev1.ServiceAccountTokenKey]
		return len(token) > 0, nil
	})
	if err != nil {
		return nil, fmt.Errorf("the member's token controller did not fill in %s/%s: %w", Namespace, secret.Name, err)
	}
	return kubeconfig(admin, name, string(token))
}

// ensureClusterRole creates the role, or sets its rules to the current
// ones (a newer Lotse may propagate more kinds).
func ensureClusterRole(ctx context.Context, cs kubernetes.Interface, want *rbacv1.ClusterRole) (*rbacv1.ClusterRole, error) {
	got, err := cs.RbacV1().ClusterRoles().Create(ctx, want, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		return got, err
	}
	got, err = cs.RbacV1().ClusterRoles().Get(ctx, want.Name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	if got.DeletionTimestamp != nil {
		return nil, fmt.Errorf("an earlier identity %s of this member is still being removed; join again in a moment", want.Name)
	}
	got.Rules = want.Rules
	return cs.RbacV1().ClusterRoles().Update(ctx, got, metav1.UpdateOptions{})
}

// kubeconfig reaches the admin config's server, trusting what it trusts,
// with the token.
func kubeconfig(admin *rest.Config, user, token string) ([]byte, error) {
	ca := admin.CAData
	if len(ca) == 0 && admin.CAFile != "" {
		var err error
		if ca, err = os.ReadFile(admin.CAFile); err != nil {
			return nil, err
		}
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["member"] = &clientcmdapi.Cluster{Server: admin.Host, CertificateAuthorityData: ca, TLSServerName: admin.ServerName,
		InsecureSkipTLSVerify: admin.Insecure}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["member"] = &clientcmdapi.Context{Cluster: "member", AuthInfo: user}
	cfg.CurrentContext = "member"
	return clientcmd.Write(*cfg)
}

// ErrGone says that the identity was gone already: its role, or (the
// token no longer authenticates) its ServiceAccount.
var ErrGone = errors.New("the fleet's identity is gone from the member already")

// Revoke deletes the fleet's identity in a member with the identity's own
// credentials: the ClusterRole goes, and with it (owned) the binding, the
// ServiceAccount and its token.
func Revoke(ctx context.Context, own *rest.Config, fleetNamespace, fleet, member string) error {
	cs, err := kubernetes.NewForConfig(own)
	if err != nil {
		return err
	}
	err = cs.RbacV1().ClusterRoles().Delete(ctx, Name(fleetNamespace, fleet, member), metav1.DeleteOptions{
		PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)})
	if apierrors.IsNotFound(err) || apierrors.IsUnauthorized(err) {
		return ErrGone
	}
	return err
}
