package project

import (
	"context"
	"fmt"
	"reflect"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// RoleName is the ClusterRole (bound in a project's namespace) of a role.
func RoleName(role lotsev1.ProjectRole) string { return "lotse:project:" + string(role) }

var (
	lotseGroup = lotsev1.GroupVersion.Group
	read       = []string{"get", "list", "watch"}
	write      = []string{"create", "update", "patch", "delete", "deletecollection"}
)

// Roles are the ClusterRoles that a project's role bindings grant in its
// namespace. Viewers see clusters, machines, fleets and events, but no
// Secret (a cluster's kubeconfig is one); admins and owners also change
// clusters and fleets and read and write Secrets. Status belongs to Lotse:
// no role writes it. Machines are Lotse's too: they are changed through
// their cluster's pools.
func Roles() []*rbacv1.ClusterRole {
	viewer := []rbacv1.PolicyRule{
		{APIGroups: []string{lotseGroup}, Resources: []string{"clusters", "clusters/status", "machines", "machines/status", "fleets", "fleets/status", "fleetmembers", "fleetmembers/status"}, Verbs: read},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: read},
		{APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"}, Verbs: read},
		// Short-lived kubeconfigs: viewers get the viewer role's, admins
		// either (the lotse-kubeconfig-requests policy decides).
		{APIGroups: []string{lotseGroup}, Resources: []string{"kubeconfigrequests"}, Verbs: append([]string{"create", "delete"}, read...)},
		{APIGroups: []string{lotseGroup}, Resources: []string{"kubeconfigrequests/status"}, Verbs: read},
	}
	admin := append(append([]rbacv1.PolicyRule(nil), viewer...),
		rbacv1.PolicyRule{APIGroups: []string{lotseGroup}, Resources: []string{"clusters", "fleets", "fleetmembers"}, Verbs: write},
		rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: append(append([]string(nil), read...), write...)},
	)
	role := func(r lotsev1.ProjectRole, rules []rbacv1.PolicyRule) *rbacv1.ClusterRole {
		return &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: RoleName(r), Labels: map[string]string{"app.kubernetes.io/managed-by": "lotse"}},
			Rules:      rules,
		}
	}
	return []*rbacv1.ClusterRole{
		role(lotsev1.RoleViewer, viewer),
		role(lotsev1.RoleAdmin, admin),
		role(lotsev1.RoleOwner, admin),
	}
}

// provider is CEL that holds for who may do what only the provider may:
// update a subresource that RBAC knows by name though the API serves no
// such thing (cluster-admin has every one; tenants' roles have none).
func provider(resource, subresource string) string {
	return fmt.Sprintf("authorizer.group('lotse.dev').resource('%s').subresource('%s').check('update').allowed()", resource, subresource)
}

// unchanged is CEL that holds when an optional field is as it was (and a
// create does not set it).
func unchanged(path string) string {
	now, before := present("object", path), present("oldObject", path)
	return fmt.Sprintf("(oldObject == null ? !(%[2]s) : ((%[2]s) == (%[3]s) && (!(%[2]s) || object.%[1]s == oldObject.%[1]s)))", path, now, before)
}

// present is CEL that holds when root.path is set, each step of the way:
// has() of a field under a missing one is an error, not false.
func present(root, path string) string {
	parts := strings.Split(path, ".")
	var checks []string
	for i := range parts {
		checks = append(checks, fmt.Sprintf("has(%s.%s)", root, strings.Join(parts[:i+1], ".")))
	}
	return strings.Join(checks, " && ")
}

// Policy is a ValidatingAdmissionPolicy with its binding.
type Policy struct {
	Policy  *admissionregistrationv1.ValidatingAdmissionPolicy
	Binding *admissionregistrationv1.ValidatingAdmissionPolicyBinding
}

func policy(name string, rules []admissionregistrationv1.NamedRuleWithOperations, matchConditions []admissionregistrationv1.MatchCondition, validations ...admissionregistrationv1.Validation) Policy {
	fail := admissionregistrationv1.Fail
	for i := range validations {
		validations[i].Reason = ptr.To(metav1.StatusReasonForbidden)
	}
	return Policy{
		Policy: &admissionregistrationv1.ValidatingAdmissionPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
				FailurePolicy:    &fail,
				MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: rules},
				MatchConditions:  matchConditions,
				Validations:      validations,
			},
		},
		Binding: &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			// Written out as the API server defaults it, so that a binding
			// someone narrowed is told apart and put back.
			Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
				PolicyName:        name,
				ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
				MatchResources: &admissionregistrationv1.MatchResources{
					NamespaceSelector: &metav1.LabelSelector{},
					ObjectSelector:    &metav1.LabelSelector{},
					MatchPolicy:       ptr.To(admissionregistrationv1.Equivalent),
				},
			},
		},
	}
}

func rule(group, resource string, ops ...admissionregistrationv1.OperationType) []admissionregistrationv1.NamedRuleWithOperations {
	return []admissionregistrationv1.NamedRuleWithOperations{{
		RuleWithOperations: admissionregistrationv1.RuleWithOperations{
			Operations: ops,
			Rule: admissionregistrationv1.Rule{APIGroups: []string{group}, APIVersions: []string{"*"}, Resources: []string{resource},
				Scope: ptr.To(admissionregistrationv1.AllScopes)},
		},
	}}
}

// Names of the admission policies Lotse installs.
const (
	ProjectPolicyName      = "lotse-project-owners"
	BackupPolicyName       = "lotse-backup-destinations"
	FleetZonePolicyName    = "lotse-fleet-dns-zones"
	ManagedSecretsPolicy   = "lotse-managed-secrets"
	TokenSecretsPolicyName = "lotse-service-account-token-secrets"
	KubeconfigPolicyName   = "lotse-kubeconfig-requests"
	// KubeconfigDeletePolicyName keeps a request, the record of who got
	// what, from being deleted by other members.
	KubeconfigDeletePolicyName = "lotse-kubeconfig-request-records"
)

// Policies keep to the provider what tenants' roles would otherwise let
// them reach through objects they may write:
//   - a project's quota and its metadata (owners change members and the
//     description only);
//   - where a cluster's backups go (a directory on the manager's host or an
//     S3 endpoint the manager sends to);
//   - a fleet's own DNS zone (zones are shared by every project);
//   - the Secrets Lotse writes (a cluster's kubeconfig): only who may write
//     a cluster's status changes them;
//   - Secrets that mint service-account tokens: only who may ask for a
//     token makes one;
//   - KubeconfigRequests: a kubeconfig names who asks for it, and only
//     who may change the cluster asks for the admin role.
func Policies() []Policy {
	update := admissionregistrationv1.Update
	create := admissionregistrationv1.Create
	isProvider := provider("projects", "quota")
	return []Policy{
		policy(ProjectPolicyName, rule(lotseGroup, "projects", update), nil,
			admissionregistrationv1.Validation{
				Expression:        unchanged("spec.quota") + " || " + isProvider,
				MessageExpression: `'spec.quota of project ' + object.metadata.name + ' is set by the provider: ' + request.userInfo.username + ' may change its members but not its quota (that needs update on projects/quota)'`,
			},
			admissionregistrationv1.Validation{
				Expression: unchanged("metadata.labels") + " && " + unchanged("metadata.annotations") + " && " + unchanged("metadata.finalizers") +
					" && " + unchanged("metadata.ownerReferences") + " || " + isProvider,
				MessageExpression: `'project ' + object.metadata.name + ': ' + request.userInfo.username + ' may change spec.members and spec.description, not its labels, annotations, finalizers or owners'`,
			}),
		policy(BackupPolicyName, rule(lotseGroup, "clusters", create, update), nil,
			admissionregistrationv1.Validation{
				Expression: "(" + unchanged("spec.backup.directory") + " && " + unchanged("spec.backup.s3") + ") || " +
					provider("clusters", "backup-destination"),
				MessageExpression: `'spec.backup.directory and spec.backup.s3 of cluster ' + object.metadata.name + ' are set by the provider (they name a place on the host of the manager or an endpoint it sends to); leave them out and backups go to the default destination of the provider'`,
			}),
		policy(FleetZonePolicyName, rule(lotseGroup, "fleets", create, update), nil,
			admissionregistrationv1.Validation{
				Expression:        "!has(object.spec.dns) || " + unchanged("spec.dns.zone") + " || " + provider("fleets", "dns-zone"),
				MessageExpression: `'spec.dns.zone of fleet ' + object.metadata.name + ' is set by the provider (zones are shared by every project); leave it out for NAME.NAMESPACE.fleet.lotse'`,
			}),
		policy(ManagedSecretsPolicy, rule("", "secrets", create, update), []admissionregistrationv1.MatchCondition{{
			Name:       "lotse-managed",
			Expression: `(has(object.metadata.labels) && 'lotse.dev/cluster' in object.metadata.labels) || (oldObject != null && has(oldObject.metadata.labels) && 'lotse.dev/cluster' in oldObject.metadata.labels)`,
		}},
			admissionregistrationv1.Validation{
				Expression:        "authorizer.group('lotse.dev').resource('clusters').subresource('status').namespace(object.metadata.namespace).check('update').allowed()",
				MessageExpression: `'Secret ' + object.metadata.name + ' is written by Lotse (label lotse.dev/cluster); ' + request.userInfo.username + ' may read it but not change it'`,
			}),
		policy(KubeconfigDeletePolicyName, rule(lotseGroup, "kubeconfigrequests", admissionregistrationv1.Delete), nil,
			admissionregistrationv1.Validation{
				// The namespace controller deletes with deletecollection
				// rights, which no member has.
				Expression: "oldObject.spec.user == request.userInfo.username || " +
					"authorizer.group('lotse.dev').resource('clusters').namespace(oldObject.metadata.namespace).name(oldObject.spec.cluster).check('update').allowed() || " +
					"authorizer.group('lotse.dev').resource('kubeconfigrequests').namespace(oldObject.metadata.namespace).check('deletecollection').allowed()",
				MessageExpression: `'KubeconfigRequest ' + oldObject.metadata.name + ' is the record of what ' + oldObject.spec.user + ' got: only they, or who may change cluster ' + oldObject.spec.cluster + ', delete it'`,
			}),
		policy(KubeconfigPolicyName, rule(lotseGroup, "kubeconfigrequests", create), nil,
			admissionregistrationv1.Validation{
				Expression:        "object.spec.user == request.userInfo.username",
				MessageExpression: `'spec.user: a kubeconfig is for who asks for it; write ' + request.userInfo.username`,
			},
			admissionregistrationv1.Validation{
				Expression:        "!request.userInfo.username.startsWith('system:')",
				MessageExpression: `request.userInfo.username + ' is a service account or another system identity: they get no personal kubeconfig of a cluster'`,
			},
			admissionregistrationv1.Validation{
				Expression: "!has(object.spec.role) || object.spec.role != 'admin' || " +
					"authorizer.group('lotse.dev').resource('clusters').namespace(object.metadata.namespace).name(object.spec.cluster).check('update').allowed()",
				MessageExpression: `'an admin kubeconfig of cluster ' + object.spec.cluster + ' is for who may change the cluster (project admins and owners); ' + request.userInfo.username + ' may ask for role viewer'`,
			}),
		policy(TokenSecretsPolicyName, rule("", "secrets", create), []admissionregistrationv1.MatchCondition{{
			Name:       "service-account-token",
			Expression: `has(object.type) && object.type == 'kubernetes.io/service-account-token'`,
		}},
			admissionregistrationv1.Validation{
				Expression:        "authorizer.group('').resource('serviceaccounts').subresource('token').namespace(object.metadata.namespace).check('create').allowed()",
				MessageExpression: `'a Secret of type kubernetes.io/service-account-token mints a token: ' + request.userInfo.username + ' may not create service-account tokens in namespace ' + object.metadata.namespace`,
			}),
	}
}

// Install writes the project roles and the admission policies, where they
// differ from what they should be. Managers starting together (the
// replicas of the Helm chart) race to write them: one that lost a race
// reads again and finds what the other wrote.
func Install(ctx context.Context, c client.Client) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		err = install(ctx, c)
		if !apierrors.IsAlreadyExists(err) && !apierrors.IsConflict(err) { // both see through wrapping
			return err
		}
	}
	return err
}

func install(ctx context.Context, c client.Client) error {
	// The policies first: the roles let members create what only the
	// policies hold in check.
	for _, p := range Policies() {
		if err := applyPolicy(ctx, c, p); err != nil {
			return err
		}
	}
	for _, want := range Roles() {
		have := &rbacv1.ClusterRole{}
		err := c.Get(ctx, client.ObjectKeyFromObject(want), have)
		switch {
		case apierrors.IsNotFound(err):
			err = c.Create(ctx, want)
		case err == nil && !reflect.DeepEqual(have.Rules, want.Rules):
			have.Rules = want.Rules
			err = c.Update(ctx, have)
		}
		if err != nil {
			return fmt.Errorf("install ClusterRole %s: %w", want.Name, err)
		}
	}
	// An earlier Lotse kept quotas with a policy of this name; the project
	// owners' policy does that now.
	for _, obj := range []client.Object{
		&admissionregistrationv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: "lotse-project-quota"}},
		&admissionregistrationv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: "lotse-project-quota"}},
	} {
		if err := c.Delete(ctx, obj); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("remove the old %s: %w", obj.GetName(), err)
		}
	}
	return nil
}

func applyPolicy(ctx context.Context, c client.Client, p Policy) error {
	have := &admissionregistrationv1.ValidatingAdmissionPolicy{}
	err := c.Get(ctx, client.ObjectKeyFromObject(p.Policy), have)
	switch {
	case apierrors.IsNotFound(err):
		err = c.Create(ctx, p.Policy)
	case err == nil && (!reflect.DeepEqual(have.Spec.Validations, p.Policy.Spec.Validations) || !reflect.DeepEqual(have.Spec.MatchConditions, p.Policy.Spec.MatchConditions) ||
		!reflect.DeepEqual(have.Spec.FailurePolicy, p.Policy.Spec.FailurePolicy) ||
		have.Spec.MatchConstraints == nil || !reflect.DeepEqual(have.Spec.MatchConstraints.ResourceRules, p.Policy.Spec.MatchConstraints.ResourceRules)):
		have.Spec = p.Policy.Spec
		err = c.Update(ctx, have)
	}
	if err != nil {
		return fmt.Errorf("install ValidatingAdmissionPolicy %s: %w", p.Policy.Name, err)
	}
	haveBinding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
	err = c.Get(ctx, client.ObjectKeyFromObject(p.Binding), haveBinding)
	switch {
	case apierrors.IsNotFound(err):
		err = c.Create(ctx, p.Binding)
	case err == nil && !reflect.DeepEqual(haveBinding.Spec, p.Binding.Spec):
		// Someone narrowed or weakened the binding: it is put back.
		haveBinding.Spec = p.Binding.Spec
		err = c.Update(ctx, haveBinding)
	}
	if err != nil {
		return fmt.Errorf("install ValidatingAdmissionPolicyBinding %s: %w", p.Binding.Name, err)
	}
	return nil
}
