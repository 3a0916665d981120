package fleet

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"slices"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	workv1 "github.com/lotse/lotse/api/work/v1alpha1"
	"github.com/lotse/lotse/internal/certrequest"
	"github.com/lotse/lotse/internal/federation/agent"
	"github.com/lotse/lotse/internal/federation/propagation"
	untrustedkubeconfig "github.com/lotse/lotse/internal/kubeconfig"
)

// A pull-mode member is set up in its fleet's API and never reached: an
// execution namespace for its Works and Lease, a Role there for its
// agent's identity, and a bootstrap token with which the agent asks for
// that identity (a client certificate the fleet's controller-manager
// signs once Lotse approved the request, as kubeadm's node join does).

// Names of a pull-mode member's agent.
const (
	// agentBootstrapGroup is the group of the bootstrap tokens.
	agentBootstrapGroup = "system:bootstrappers:lotse:fleet-agent"
	agentRole           = "lotse:fleet-agent"
	agentBootstrapRole  = "lotse:fleet-agent-bootstrap"
	// bootstrapTokenTTL: a token is good for this long; a member whose
	// agent did not register by then gets a new one.
	bootstrapTokenTTL = 24 * time.Hour
	// bootstrapTokenRenewal: a token with less left than this is replaced,
	// so that registering a member again always hands out a usable one.
	bootstrapTokenRenewal = 10 * time.Minute
)

// AgentSecretName is the management API's Secret with a pull-mode
// member's bootstrap kubeconfig (key "kubeconfig"), which `lotse fleet
// register` hands to the agent.
func AgentSecretName(member string) string { return member + "-fleet-agent" }

// isPull says whether a member's agent pulls.
func isPull(m *lotsev1.FleetMember) bool { return m.Spec.SyncMode == lotsev1.SyncPull }

// fleetAdmin returns the fleet's admin configuration.
func (r *Reconciler) fleetAdmin(ctx context.Context, m *lotsev1.FleetMember) (*rest.Config, []byte, error) {
	kubeconfig, err := r.clusterKubeconfig(ctx, m.Namespace, ControlPlaneName(m.Spec.Fleet))
	if err != nil {
		return nil, nil, fmt.Errorf("the fleet's API: %w", err)
	}
	cfg, err := untrustedkubeconfig.ParseUntrusted(kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	cfg.Timeout = 10 * time.Second
	return cfg, kubeconfig, nil
}

// pullMember sets a pull-mode member up and reports its presence (its
// agent's Lease) in ready and status.
func (r *Reconciler) pullMember(ctx context.Context, m *lotsev1.FleetMember, status *lotsev1.FleetMemberStatus, ready *metav1.Condition) error {
	cfg, kubeconfig, err := r.fleetAdmin(ctx, m)
	if err != nil {
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, "FleetNotReady", err.Error()
		return nil
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	lease, err := cs.CoordinationV1().Leases(workv1.ExecutionNamespace(m.Name)).Get(ctx, workv1.AgentLeaseName, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		// The agent's reports live in the fleet: without its API the
		// member's presence is not known.
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, "FleetUnreachable", "reading the agent's lease in the fleet: "+err.Error()
		return nil
	}
	if err != nil || !fresh(lease) {
		// An agent that is not there yet, or no longer: what it needs to
		// join (again) is made sure of. A present agent had it all.
		if err := ensureAgentAccess(ctx, cs, m.Name); err != nil {
			return fmt.Errorf("setting up the member's agent access in the fleet: %w", err)
		}
	}
	// A valid token at all times: registering the member again (an agent
	// whose certificate expired) hands it out.
	if _, err := r.ensureBootstrapToken(ctx, cs, m, kubeconfig); err != nil {
		return fmt.Errorf("the member's bootstrap token: %w", err)
	}
	// The agent's first request comes with the token, its renewals with
	// the identity it has.
	if err := approveAgentCSRs(ctx, cs, m.Name, r.bootstrapTokenID(ctx, m)); err != nil {
		return fmt.Errorf("approving the agent's certificate request: %w", err)
	}
	if err != nil { // not found: no agent yet
		ready.Status, ready.Reason = metav1.ConditionFalse, ReasonUnreachable
		ready.Message = fmt.Sprintf("waiting for the member's agent to register with the bootstrap kubeconfig in Secret %s (lotse fleet register deploys the agent; lotse fleet agent runs it anywhere)",
			AgentSecretName(m.Name))
		return nil
	}
	if !fresh(lease) {
		ready.Status, ready.Reason = metav1.ConditionFalse, ReasonUnreachable
		ready.Message = "the member's agent has not renewed its lease in the fleet"
		if renewed := lease.Spec.RenewTime; renewed != nil {
			ready.Message += " since " + renewed.UTC().Format(time.RFC3339)
		}
		return nil
	}
	status.KubernetesVersion = lease.Annotations[workv1.AnnotationKubernetesVersion]
	if status.Zone == "" {
		status.Zone = lease.Annotations[workv1.AnnotationZone]
	}
	if room := lease.Annotations[workv1.AnnotationRoom]; room != "" {
		summary := &lotsev1.ResourceSummary{}
		if err := json.Unmarshal([]byte(room), summary); err == nil {
			status.ResourceSummary = summary
		}
	}
	ready.Message = "the member's agent renews its lease in the fleet"
	var readyNodes, nodes int
	if _, err := fmt.Sscanf(lease.Annotations[workv1.AnnotationNodes], "%d/%d", &readyNodes, &nodes); err == nil {
		switch {
		case nodes == 0:
			ready.Message += "; it has no nodes"
		case readyNodes == 0:
			ready.Status, ready.Reason = metav1.ConditionFalse, ReasonNoReadyNode
			ready.Message = fmt.Sprintf("the member's agent is there, but none of its %d nodes is Ready", nodes)
		default:
			ready.Message += fmt.Sprintf("; %d of %d nodes Ready", readyNodes, nodes)
		}
	}
	return nil
}

// fresh: the agent renewed its lease within the lease's duration.
func fresh(lease *coordinationv1.Lease) bool {
	if lease == nil || lease.Spec.RenewTime == nil {
		return false
	}
	duration := 40 * time.Second
	if lease.Spec.LeaseDurationSeconds != nil {
		duration = time.Duration(*lease.Spec.LeaseDurationSeconds) * time.Second
	}
	return time.Since(lease.Spec.RenewTime.Time) <= duration
}

// ensureAgentAccess makes the member's execution namespace and what its
// agent may do: there, read its Works, report their status and renew its
// Lease; anywhere, with a bootstrap token, ask for its certificate.
func ensureAgentAccess(ctx context.Context, cs kubernetes.Interface, member string) error {
	ns := workv1.ExecutionNamespace(member)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
		Labels: map[string]string{workv1.LabelMember: member}}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: agentRole}, Rules: agent.FleetRules()}
	if err := ensureRole(ctx, cs, role); err != nil {
		return err
	}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: agentRole},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: agentRole},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: workv1.AgentUser(member)}}}
	if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: agentBootstrapRole}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{certificatesv1.GroupName}, Resources: []string{"certificatesigningrequests"}, Verbs: []string{"create", "get", "list", "watch"}},
	}}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: agentBootstrapRole},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: agentBootstrapRole},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: agentBootstrapGroup}}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	// The agent renews its certificate as itself.
	renew := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: agentRenewBinding(member), Labels: map[string]string{workv1.LabelMember: member}},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: agentBootstrapRole},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: workv1.AgentUser(member)}}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, renew, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// agentRenewBinding lets a member's agent ask for its next certificate.
func agentRenewBinding(member string) string { return "lotse:fleet-agent-renew:" + member }

// bootstrapTokenID is the ID of the member's current bootstrap token (""
// when there is none).
func (r *Reconciler) bootstrapTokenID(ctx context.Context, m *lotsev1.FleetMember) string {
	s := &corev1.Secret{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: AgentSecretName(m.Name)}, s); err != nil {
		return ""
	}
	return string(s.Data["token-id"])
}

func ensureRole(ctx context.Context, cs kubernetes.Interface, role *rbacv1.Role) error {
	cur, err := cs.RbacV1().Roles(role.Namespace).Get(ctx, role.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = cs.RbacV1().Roles(role.Namespace).Create(ctx, role, metav1.CreateOptions{})
		return err
	} else if err != nil {
		return err
	}
	if equality.Semantic.DeepEqual(cur.Rules, role.Rules) {
		return nil
	}
	cur.Rules = role.Rules
	_, err = cs.RbacV1().Roles(role.Namespace).Update(ctx, cur, metav1.UpdateOptions{})
	return err
}

// ensureBootstrapToken keeps a bootstrap token for the member's agent in
// the fleet, and its kubeconfig in the management API, and returns the
// token's ID. A token that expired (or was deleted) before the agent
// registered is replaced.
func (r *Reconciler) ensureBootstrapToken(ctx context.Context, cs kubernetes.Interface, m *lotsev1.FleetMember, fleetKubeconfig []byte) (string, error) {
	s := &corev1.Secret{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: AgentSecretName(m.Name)}, s)
	if err != nil && !apierrors.IsNotFound(err) {
		return "", err
	}
	if err == nil {
		id := string(s.Data["token-id"])
		_, terr := cs.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, "bootstrap-token-"+id, metav1.GetOptions{})
		expires, perr := time.Parse(time.RFC3339, string(s.Data["expiration"]))
		if terr == nil && (perr != nil || time.Until(expires) > bootstrapTokenRenewal) {
			return id, nil
		}
		if terr != nil && !apierrors.IsNotFound(terr) {
			return "", terr
		}
		// Gone from the fleet (expired and cleaned), or about to expire:
		// a new one (the fleet's token cleaner removes the old).
	}
	id, secret := randomToken(6), randomToken(16)
	expires := time.Now().Add(bootstrapTokenTTL).UTC().Format(time.RFC3339)
	token := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: "bootstrap-token-" + id,
		Labels: map[string]string{workv1.LabelMember: m.Name}},
		Type: corev1.SecretTypeBootstrapToken,
		StringData: map[string]string{"token-id": id, "token-secret": secret, "usage-bootstrap-authentication": "true",
			"auth-extra-groups": agentBootstrapGroup, "expiration": expires,
			"description": "lotse fleet agent of member " + m.Name}}
	if _, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, token, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	bootstrap, err := bootstrapKubeconfig(fleetKubeconfig, m.Spec.Fleet, id+"."+secret)
	if err != nil {
		return "", err
	}
	want := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: m.Namespace, Name: AgentSecretName(m.Name),
		Labels: map[string]string{lotsev1.LabelFleet: m.Spec.Fleet}}}
	_, err = controllerutil.CreateOrUpdate(ctx, r.Client, want, func() error {
		want.Data = map[string][]byte{"kubeconfig": bootstrap, "token-id": []byte(id), "expiration": []byte(expires)}
		return controllerutil.SetControllerReference(m, want, r.Client.Scheme())
	})
	return id, err
}

// bootstrapKubeconfig reaches the fleet's API as its admin kubeconfig
// does, with the bootstrap token instead of the admin's certificate.
func bootstrapKubeconfig(fleetKubeconfig []byte, fleet, token string) ([]byte, error) {
	admin, err := clientcmd.Load(fleetKubeconfig)
	if err != nil {
		return nil, err
	}
	ctx := admin.Contexts[admin.CurrentContext]
	if ctx == nil || admin.Clusters[ctx.Cluster] == nil {
		return nil, fmt.Errorf("the fleet's kubeconfig has no current cluster")
	}
	c := admin.Clusters[ctx.Cluster]
	out := clientcmdapi.NewConfig()
	out.Clusters[fleet] = &clientcmdapi.Cluster{Server: c.Server, CertificateAuthorityData: c.CertificateAuthorityData}
	out.AuthInfos["bootstrap"] = &clientcmdapi.AuthInfo{Token: token}
	out.Contexts[fleet] = &clientcmdapi.Context{Cluster: fleet, AuthInfo: "bootstrap"}
	out.CurrentContext = fleet
	return clientcmd.Write(*out)
}

// randomToken is n characters of [a-z0-9], as bootstrap tokens are.
func randomToken(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // the system's randomness is gone
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// approveAgentCSRs approves the member's agent's request for its client
// certificate: from the member's bootstrap token (tokenID, if any) or
// from the agent itself (a renewal), for exactly the agent's user name,
// no groups, client authentication only. Another request from either is
// denied.
func approveAgentCSRs(ctx context.Context, cs kubernetes.Interface, member, tokenID string) error {
	list, err := cs.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range list.Items {
		csr := &list.Items[i]
		fromToken := tokenID != "" && csr.Spec.Username == "system:bootstrap:"+tokenID
		if !fromToken && csr.Spec.Username != workv1.AgentUser(member) || certrequest.Decided(csr) {
			continue
		}
		cond := certificatesv1.CertificateSigningRequestCondition{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue,
			Reason: "LotseFleetAgent", Message: "the agent of fleet member " + member, LastUpdateTime: metav1.Now()}
		if why := agentCSRProblem(csr, member); why != "" {
			cond.Type, cond.Reason, cond.Message = certificatesv1.CertificateDenied, "NotTheAgent", why
		}
		csr.Status.Conditions = append(csr.Status.Conditions, cond)
		if _, err := cs.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{}); err != nil && !apierrors.IsConflict(err) {
			return err
		}
	}
	return nil
}

// agentCSRProblem says why a request is not the agent's ("" if it is).
func agentCSRProblem(csr *certificatesv1.CertificateSigningRequest, member string) string {
	if csr.Spec.SignerName != certificatesv1.KubeAPIServerClientSignerName {
		return "the agent's certificate is signed by " + certificatesv1.KubeAPIServerClientSignerName
	}
	block, _ := pem.Decode(csr.Spec.Request)
	if block == nil {
		return "the request is not PEM"
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return "the request does not parse: " + err.Error()
	}
	if req.Subject.CommonName != workv1.AgentUser(member) || len(req.Subject.Organization) > 0 {
		return fmt.Sprintf("the agent of member %s may ask only for CN=%s without organizations, not %s", member, workv1.AgentUser(member), req.Subject.String())
	}
	if len(req.DNSNames)+len(req.IPAddresses)+len(req.EmailAddresses)+len(req.URIs) > 0 {
		return "the agent's client certificate carries no subject alternative names"
	}
	for _, u := range csr.Spec.Usages {
		if !slices.Contains([]certificatesv1.KeyUsage{certificatesv1.UsageClientAuth, certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment}, u) {
			return "usage " + string(u) + " is not a client's"
		}
	}
	return ""
}

// removePullMember is unjoin for a pull-mode member: its agent removes
// what its Works applied (unless the member keeps it, or its agent has
// been gone for the grace period), then the member's namespace and token
// go from the fleet. done is false while that is still under way.
func (r *Reconciler) removePullMember(ctx context.Context, m *lotsev1.FleetMember, keep bool) (bool, error) {
	cfg, _, err := r.fleetAdmin(ctx, m)
	if apierrors.IsNotFound(err) {
		return true, nil // the fleet is gone, and its API with it
	}
	if err != nil {
		return false, err
	}
	dyn, err := dynamicFor(cfg)
	if err != nil {
		return false, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return false, err
	}
	if keep {
		if err := propagation.ForgetWorks(ctx, dyn, m.Name); err != nil {
			return false, err
		}
	} else if rerr := propagation.RemoveWorks(ctx, dyn, m.Name); rerr != nil {
		gone, err := agentGoneFor(ctx, cs, m.Name)
		if err != nil {
			return false, err
		}
		if gone < unjoinGrace {
			r.event(m, corev1.EventTypeWarning, "UnjoinBlocked", "%v", rerr)
			return false, nil
		}
		r.event(m, corev1.EventTypeWarning, "UnjoinedUnclean", "the member's agent has been gone for %s; the copies it applied stay in the member (objects labelled %s=%s)",
			gone.Round(time.Second), lotsev1.LabelFleet, m.Spec.Fleet)
		if err := propagation.ForgetWorks(ctx, dyn, m.Name); err != nil {
			return false, err
		}
	}
	ns := workv1.ExecutionNamespace(m.Name)
	if err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return false, err
	}
	if err := cs.RbacV1().ClusterRoleBindings().Delete(ctx, agentRenewBinding(m.Name), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return false, err
	}
	tokens, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{LabelSelector: workv1.LabelMember + "=" + m.Name})
	if err != nil {
		return false, err
	}
	for _, t := range tokens.Items {
		if err := cs.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, t.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return false, err
		}
	}
	return true, nil
}

// agentGoneFor is how long a member's agent has not renewed its lease.
func agentGoneFor(ctx context.Context, cs kubernetes.Interface, member string) (time.Duration, error) {
	lease, err := cs.CoordinationV1().Leases(workv1.ExecutionNamespace(member)).Get(ctx, workv1.AgentLeaseName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return unjoinGrace, nil // never there: nothing applied anything
	} else if err != nil {
		return 0, err
	}
	if lease.Spec.RenewTime == nil {
		return unjoinGrace, nil
	}
	return time.Since(lease.Spec.RenewTime.Time), nil
}
