package project

import (
	"context"
	"fmt"
	"reflect"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// RoleName is the ClusterRole (bound in a project's namespace) of a role.
func RoleName(role lotsev1.ProjectRole) string { return "lotse:project:" + string(role) }

// QuotaPolicyName names the admission policy that keeps project quotas
// the provider's.
const QuotaPolicyName = "lotse-project-quota"

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

// QuotaPolicy refuses a change of a project's spec.quota by anyone not
// allowed to update projects/quota (a name RBAC knows, though the API
// serves no such subresource): owners may update their project's members,
// not its quota. cluster-admin may.
func QuotaPolicy() (*admissionregistrationv1.ValidatingAdmissionPolicy, *admissionregistrationv1.ValidatingAdmissionPolicyBinding) {
	fail := admissionregistrationv1.Fail
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: QuotaPolicyName},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: &fail,
			MatchConstraints: &admissionregistrationv1.MatchResources{
				ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update},
						Rule: admissionregistrationv1.Rule{
							APIGroups: []string{lotseGroup}, APIVersions: []string{"*"}, Resources: []string{"projects"},
						},
					},
				}},
			},
			Validations: []admissionregistrationv1.Validation{{
				Expression: `(has(object.spec.quota) == has(oldObject.spec.quota) && (!has(object.spec.quota) || object.spec.quota == oldObject.spec.quota)) || ` +
					`authorizer.group('lotse.dev').resource('projects').subresource('quota').name(object.metadata.name).check('update').allowed()`,
				MessageExpression: `'spec.quota of project ' + object.metadata.name + ' is set by the provider: ' + request.userInfo.username + ' may change its members but not its quota (that needs update on projects/quota)'`,
				Reason:            ptrTo(metav1.StatusReasonForbidden),
			}},
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: QuotaPolicyName},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        QuotaPolicyName,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
		},
	}
	return policy, binding
}

func ptrTo[T any](v T) *T { return &v }

// Install writes the roles and the quota policy, where they differ.
func Install(ctx context.Context, c client.Client) error {
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
	policy, binding := QuotaPolicy()
	havePolicy := &admissionregistrationv1.ValidatingAdmissionPolicy{}
	err := c.Get(ctx, client.ObjectKeyFromObject(policy), havePolicy)
	switch {
	case apierrors.IsNotFound(err):
		err = c.Create(ctx, policy)
	case err == nil && !reflect.DeepEqual(havePolicy.Spec.Validations, policy.Spec.Validations):
		havePolicy.Spec = policy.Spec
		err = c.Update(ctx, havePolicy)
	}
	if err != nil {
		return fmt.Errorf("install ValidatingAdmissionPolicy %s: %w", policy.Name, err)
	}
	haveBinding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
	err = c.Get(ctx, client.ObjectKeyFromObject(binding), haveBinding)
	if apierrors.IsNotFound(err) {
		err = c.Create(ctx, binding)
	}
	if err != nil {
		return fmt.Errorf("install ValidatingAdmissionPolicyBinding %s: %w", binding.Name, err)
	}
	return nil
}
