package cli

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

func newProjectCommand() *cobra.Command {
	flags := &clientFlags{}
	cmd := &cobra.Command{
		Use:     "project",
		Aliases: []string{"projects"},
		Short:   "Projects: a namespace of clusters per tenant, with members, roles and quotas",
	}
	cmd.PersistentFlags().StringVar(&flags.kubeconfig, "kubeconfig", "", "kubeconfig of the management API (default $LOTSE_KUBECONFIG, else the one lotse up wrote)")
	cmd.AddCommand(newProjectCreateCommand(flags), newProjectListCommand(flags), newProjectGetCommand(flags),
		newProjectDeleteCommand(flags), newProjectMemberCommand(flags), newProjectQuotaCommand(flags))
	return cmd
}

// parseMember reads [KIND:]NAME=ROLE, e.g. alice=owner, Group:ops=viewer,
// ServiceAccount:ci:deployer=admin.
func parseMember(s string) (lotsev1.ProjectMember, error) {
	subject, role, ok := strings.Cut(s, "=")
	if !ok || subject == "" {
		return lotsev1.ProjectMember{}, fmt.Errorf("--member %q: write [KIND:]NAME=ROLE, e.g. alice=owner, Group:ops=viewer or ServiceAccount:ci:deployer=admin", s)
	}
	m := lotsev1.ProjectMember{Kind: "User", Name: subject, Role: lotsev1.ProjectRole(role)}
	if kind, rest, ok := strings.Cut(subject, ":"); ok && (kind == "User" || kind == "Group" || kind == "ServiceAccount") {
		m.Kind, m.Name = kind, rest
	}
	switch m.Role {
	case lotsev1.RoleOwner, lotsev1.RoleAdmin, lotsev1.RoleViewer:
	default:
		return lotsev1.ProjectMember{}, fmt.Errorf("--member %q: role %q is not one of owner, admin, viewer", s, role)
	}
	return m, nil
}

// quotaFlags are the limits of a project; -1 leaves a limit unset.
type quotaFlags struct {
	clusters, nodes, replicas int
}

func (q *quotaFlags) register(cmd *cobra.Command) {
	cmd.Flags().IntVar(&q.clusters, "max-clusters", -1, "how many clusters the project may have (-1: no limit)")
	cmd.Flags().IntVar(&q.nodes, "max-nodes", -1, "how many worker machines its pools may reach together (-1: no limit)")
	cmd.Flags().IntVar(&q.replicas, "max-control-plane-replicas", -1, "control-plane replicas together, 1 per cluster and 3 per HA one (-1: no limit)")
}

// apply writes the limits the user set on the command line into a
// project's quota (a quota without any limit is removed).
func (q *quotaFlags) apply(cmd *cobra.Command, into **lotsev1.ProjectQuota) error {
	set := func(flag string, v int, field **int32) error {
		if !cmd.Flags().Changed(flag) {
			return nil
		}
		if v < -1 || v > math.MaxInt32 {
			return fmt.Errorf("--%s %d: give a count from 0 to %d, or -1 for no limit", flag, v, math.MaxInt32)
		}
		if v == -1 {
			*field = nil
			return nil
		}
		n := int32(v)
		*field = &n
		return nil
	}
	if *into == nil {
		*into = &lotsev1.ProjectQuota{}
	}
	q0 := *into
	if err := set("max-clusters", q.clusters, &q0.Clusters); err != nil {
		return err
	}
	if err := set("max-nodes", q.nodes, &q0.Nodes); err != nil {
		return err
	}
	if err := set("max-control-plane-replicas", q.replicas, &q0.ControlPlaneReplicas); err != nil {
		return err
	}
	if q0.Clusters == nil && q0.Nodes == nil && q0.ControlPlaneReplicas == nil {
		*into = nil
	}
	return nil
}

func getProject(ctx context.Context, c client.Client, name string) (*lotsev1.Project, error) {
	p := &lotsev1.Project{}
	if err := c.Get(ctx, client.ObjectKey{Name: name}, p); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("project %s does not exist (see `lotse project list`)", name)
		}
		return nil, explain(err)
	}
	return p, nil
}

func newProjectCreateCommand(flags *clientFlags) *cobra.Command {
	var members []string
	var description string
	var waitReady bool
	q := &quotaFlags{}
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a project: its namespace project-NAME, its members' roles and its quota",
		Args:  exactlyOneName("lotse project create NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := &lotsev1.Project{ObjectMeta: metav1.ObjectMeta{Name: args[0]}}
			p.Spec.Description = description
			for _, s := range members {
				m, err := parseMember(s)
				if err != nil {
					return err
				}
				p.Spec.Members = append(p.Spec.Members, m)
			}
			if err := q.apply(cmd, &p.Spec.Quota); err != nil {
				return err
			}
			c, err := flags.client()
			if err != nil {
				return err
			}
			if err := c.Create(cmd.Context(), p); err != nil {
				if apierrors.IsAlreadyExists(err) {
					return fmt.Errorf("project %s already exists; pick another name or change it with `lotse project member` and `lotse project quota`", p.Name)
				}
				return explain(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "project %s created; its clusters go in namespace %s%s (`lotse cluster -p %s ...`)\n", p.Name, lotsev1.ProjectNamespacePrefix, p.Name, p.Name)
			if !waitReady {
				return nil
			}
			return wait.PollUntilContextTimeout(cmd.Context(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				cur, err := getProject(ctx, c, p.Name)
				if err != nil {
					return false, nil
				}
				return meta.IsStatusConditionTrue(cur.Status.Conditions, lotsev1.ConditionProjectReady) && cur.Status.ObservedGeneration == cur.Generation, nil
			})
		},
	}
	cmd.Flags().StringArrayVar(&members, "member", nil, "a member as [KIND:]NAME=ROLE: alice=owner, Group:ops=viewer, ServiceAccount:ci:deployer=admin (repeatable)")
	cmd.Flags().StringVar(&description, "description", "", "what the project is for")
	cmd.Flags().BoolVar(&waitReady, "wait", false, "wait until the project's namespace and roles are in place")
	q.register(cmd)
	return cmd
}

func newProjectListCommand(flags *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List projects with their usage and quota",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			list := &lotsev1.ProjectList{}
			if err := c.List(cmd.Context(), list); err != nil {
				return explain(err)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tNAMESPACE\tMEMBERS\tCLUSTERS\tNODES\tCP REPLICAS\tREADY")
			for _, p := range list.Items {
				lim := func(used int32, limit func(*lotsev1.ProjectQuota) *int32) string {
					if p.Spec.Quota == nil || limit(p.Spec.Quota) == nil {
						return strconv.Itoa(int(used))
					}
					return fmt.Sprintf("%d/%d", used, *limit(p.Spec.Quota))
				}
				ready := "Unknown"
				if cond := meta.FindStatusCondition(p.Status.Conditions, lotsev1.ConditionProjectReady); cond != nil {
					ready = string(cond.Status)
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", p.Name, p.Status.Namespace, len(p.Spec.Members),
					lim(p.Status.Usage.Clusters, func(q *lotsev1.ProjectQuota) *int32 { return q.Clusters }),
					lim(p.Status.Usage.Nodes, func(q *lotsev1.ProjectQuota) *int32 { return q.Nodes }),
					lim(p.Status.Usage.ControlPlaneReplicas, func(q *lotsev1.ProjectQuota) *int32 { return q.ControlPlaneReplicas }),
					ready)
			}
			return w.Flush()
		},
	}
}

func newProjectGetCommand(flags *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Show a project: members, quota, usage and conditions",
		Args:  exactlyOneName("lotse project get NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			p, err := getProject(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Project:    %s\nNamespace:  %s\n", p.Name, p.Status.Namespace)
			if p.Spec.Description != "" {
				fmt.Fprintf(out, "About:      %s\n", p.Spec.Description)
			}
			fmt.Fprintln(out, "Members:")
			for _, m := range p.Spec.Members {
				fmt.Fprintf(out, "  %s %s: %s\n", m.Kind, m.Name, m.Role)
			}
			limit := func(v *int32) string {
				if v == nil {
					return "no limit"
				}
				return strconv.Itoa(int(*v))
			}
			q := p.Spec.Quota
			if q == nil {
				q = &lotsev1.ProjectQuota{}
			}
			u := p.Status.Usage
			fmt.Fprintf(out, "Usage:\n  clusters: %d (%s)\n  nodes: %d (%s)\n  control-plane replicas: %d (%s)\n",
				u.Clusters, limit(q.Clusters), u.Nodes, limit(q.Nodes), u.ControlPlaneReplicas, limit(q.ControlPlaneReplicas))
			fmt.Fprintln(out, "Conditions:")
			for _, cond := range p.Status.Conditions {
				fmt.Fprintf(out, "  %s=%s (%s): %s\n", cond.Type, cond.Status, cond.Reason, cond.Message)
			}
			return nil
		},
	}
}

func newProjectDeleteCommand(flags *clientFlags) *cobra.Command {
	var waitGone bool
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a project without clusters (its namespace and role bindings go with it)",
		Args:  exactlyOneName("lotse project delete NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			p := &lotsev1.Project{ObjectMeta: metav1.ObjectMeta{Name: args[0]}}
			if err := c.Delete(cmd.Context(), p); err != nil {
				if apierrors.IsNotFound(err) {
					return fmt.Errorf("project %s does not exist (see `lotse project list`)", args[0])
				}
				return explain(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "project %s is being deleted\n", args[0])
			if !waitGone {
				return nil
			}
			return wait.PollUntilContextTimeout(cmd.Context(), 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
				err := c.Get(ctx, client.ObjectKeyFromObject(p), &lotsev1.Project{})
				return apierrors.IsNotFound(err), nil
			})
		},
	}
	cmd.Flags().BoolVar(&waitGone, "wait", false, "wait until the project is gone")
	return cmd
}

// updateProject changes a project with retries on conflicts.
func updateProject(ctx context.Context, c client.Client, name string, change func(*lotsev1.Project) error) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p, err := getProject(ctx, c, name)
		if err != nil {
			return err
		}
		if err := change(p); err != nil {
			return err
		}
		return c.Update(ctx, p)
	})
}

func newProjectMemberCommand(flags *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "member",
		Short: "Add, change or remove a project's members (owners may)",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "set PROJECT [KIND:]NAME=ROLE",
		Short: "Add a member, or change the role of one",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := parseMember(args[1])
			if err != nil {
				return err
			}
			c, err := flags.client()
			if err != nil {
				return err
			}
			err = updateProject(cmd.Context(), c, args[0], func(p *lotsev1.Project) error {
				for i := range p.Spec.Members {
					if p.Spec.Members[i].Kind == m.Kind && p.Spec.Members[i].Name == m.Name {
						p.Spec.Members[i].Role = m.Role
						return nil
					}
				}
				p.Spec.Members = append(p.Spec.Members, m)
				return nil
			})
			if err != nil {
				return explain(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s is %s of project %s\n", m.Kind, m.Name, m.Role, args[0])
			return nil
		},
	}, &cobra.Command{
		Use:   "remove PROJECT [KIND:]NAME",
		Short: "Remove a member",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := parseMember(args[1] + "=viewer")
			if err != nil {
				return err
			}
			c, err := flags.client()
			if err != nil {
				return err
			}
			err = updateProject(cmd.Context(), c, args[0], func(p *lotsev1.Project) error {
				for i := range p.Spec.Members {
					if p.Spec.Members[i].Kind == m.Kind && p.Spec.Members[i].Name == m.Name {
						p.Spec.Members = append(p.Spec.Members[:i], p.Spec.Members[i+1:]...)
						return nil
					}
				}
				return fmt.Errorf("%s %s is not a member of project %s (see `lotse project get %s`)", m.Kind, m.Name, args[0], args[0])
			})
			if err != nil {
				return explain(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s removed from project %s\n", m.Kind, m.Name, args[0])
			return nil
		},
	})
	return cmd
}

func newProjectQuotaCommand(flags *clientFlags) *cobra.Command {
	q := &quotaFlags{}
	cmd := &cobra.Command{
		Use:   "quota PROJECT",
		Short: "Set a project's limits (the provider may; -1 removes a limit)",
		Args:  exactlyOneName("lotse project quota PROJECT --max-clusters N"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("max-clusters") && !cmd.Flags().Changed("max-nodes") && !cmd.Flags().Changed("max-control-plane-replicas") {
				return fmt.Errorf("give at least one of --max-clusters, --max-nodes, --max-control-plane-replicas")
			}
			c, err := flags.client()
			if err != nil {
				return err
			}
			if err := updateProject(cmd.Context(), c, args[0], func(p *lotsev1.Project) error { return q.apply(cmd, &p.Spec.Quota) }); err != nil {
				return explain(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "quota of project %s updated\n", args[0])
			return nil
		},
	}
	q.register(cmd)
	return cmd
}
