package cli

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	clustercontroller "github.com/lotse/lotse/internal/controller/cluster"
	fleetcontroller "github.com/lotse/lotse/internal/controller/fleet"
	"github.com/lotse/lotse/internal/federation/access"
	"github.com/lotse/lotse/internal/fsutil"
)

func newFleetCommand() *cobra.Command {
	flags := &clientFlags{}
	cmd := &cobra.Command{
		Use:     "fleet",
		Aliases: []string{"fleets"},
		Short:   "Federate clusters: create fleets, join and unjoin members",
	}
	flags.register(cmd)
	cmd.AddCommand(newFleetCreateCommand(flags), newFleetListCommand(flags), newFleetStatusCommand(flags),
		newFleetJoinCommand(flags), newFleetUnjoinCommand(flags), newFleetKubeconfigCommand(flags),
		newFleetRegisterCommand(flags), newFleetAgentCommand(), newFleetDeleteCommand(flags))
	return cmd
}

func newFleetDeleteCommand(flags *clientFlags) *cobra.Command {
	return newDeleteCommand(flags, "fleet", "status", "Delete a fleet: every member leaves (what the fleet put there goes), then its API",
		func(namespace, name string) client.Object {
			return &lotsev1.Fleet{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
		})
}

func getFleet(ctx context.Context, c client.Client, namespace, name string) (*lotsev1.Fleet, error) {
	f := &lotsev1.Fleet{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, f); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("fleet %s/%s does not exist (see `lotse fleet list`)", namespace, name)
		}
		return nil, explain(err)
	}
	return f, nil
}

func newFleetCreateCommand(flags *clientFlags) *cobra.Command {
	var version string
	var ha, waitReady bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a fleet: a hosted API where resources and policies are applied once for every member",
		Args:  exactlyOneName("lotse fleet create NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			f := &lotsev1.Fleet{ObjectMeta: metav1.ObjectMeta{Namespace: flags.namespace, Name: args[0]}}
			f.Spec.Kubernetes.Version = version
			f.Spec.ControlPlane.HighAvailability = ha
			if err := c.Create(cmd.Context(), f); err != nil {
				return explain(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "fleet %s/%s created\n", f.Namespace, f.Name)
			if !waitReady {
				return nil
			}
			err = wait.PollUntilContextTimeout(cmd.Context(), time.Second, timeout, true, func(ctx context.Context) (bool, error) {
				cur, err := getFleet(ctx, c, f.Namespace, f.Name)
				if err != nil {
					return false, nil
				}
				return cur.Status.Phase == lotsev1.FleetReady, nil
			})
			if err != nil {
				return fmt.Errorf("fleet %s not ready after %s (see `lotse fleet status %s`)", f.Name, timeout, f.Name)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "fleet %s/%s ready; its API: lotse fleet kubeconfig %s\n", f.Namespace, f.Name, f.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&version, "version", "", "Kubernetes version of the fleet's API (default: the catalog's default)")
	cmd.Flags().BoolVar(&ha, "ha", false, "a highly available fleet API (3 etcd members, 2 API servers)")
	cmd.Flags().BoolVar(&waitReady, "wait", false, "wait until the fleet is ready")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long --wait waits")
	return cmd
}

func newFleetListCommand(flags *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List fleets",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			list := &lotsev1.FleetList{}
			if err := c.List(cmd.Context(), list, client.InNamespace(flags.namespace)); err != nil {
				return explain(err)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tPHASE\tMEMBERS\tREADY\tENDPOINT\tAGE")
			for _, f := range list.Items {
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s\n", f.Name, f.Status.Phase, f.Status.Members, f.Status.ReadyMembers, f.Status.Endpoint,
					duration.HumanDuration(time.Since(f.CreationTimestamp.Time)))
			}
			return w.Flush()
		},
	}
}

func newFleetStatusCommand(flags *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "status NAME",
		Short: "Show a fleet and the health of its members",
		Args:  exactlyOneName("lotse fleet status NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			f, err := getFleet(cmd.Context(), c, flags.namespace, args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Fleet:     %s/%s\nPhase:     %s\nEndpoint:  %s\nAPI:       Cluster %s\n", f.Namespace, f.Name, f.Status.Phase,
				f.Status.Endpoint, f.Status.ControlPlane)
			for _, cond := range f.Status.Conditions {
				fmt.Fprintf(out, "Condition: %s=%s (%s) %s\n", cond.Type, cond.Status, cond.Reason, cond.Message)
			}
			list := &lotsev1.FleetMemberList{}
			if err := c.List(cmd.Context(), list, client.InNamespace(flags.namespace)); err != nil {
				return explain(err)
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "\nMEMBER\tCLUSTER\tREGION\tZONE\tVERSION\tREADY\tMESSAGE")
			for _, m := range list.Items {
				if m.Spec.Fleet != f.Name {
					continue
				}
				target := m.Spec.Cluster
				if target == "" && m.Spec.KubeconfigSecretRef != nil {
					target = "secret/" + m.Spec.KubeconfigSecretRef.Name
				}
				ready, msg := "Unknown", ""
				if cond := meta.FindStatusCondition(m.Status.Conditions, lotsev1.ConditionMemberReady); cond != nil {
					ready, msg = string(cond.Status), cond.Message
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, target, m.Status.Region, m.Status.Zone, m.Status.KubernetesVersion, ready, msg)
			}
			return w.Flush()
		},
	}
}

func newFleetJoinCommand(flags *clientFlags) *cobra.Command {
	var as, kubeconfig, region, zone, provider string
	var createIdentity bool
	var labels map[string]string
	cmd := &cobra.Command{
		Use:   "join FLEET [CLUSTER]",
		Short: "Make a Lotse cluster (CLUSTER) or any cluster (--kubeconfig-file FILE --as NAME) a member of a fleet",
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 2 && kubeconfig == "":
				return nil
			case len(args) == 1 && kubeconfig != "" && as != "":
				return nil
			}
			return fmt.Errorf("usage: lotse fleet join FLEET CLUSTER, or lotse fleet join FLEET --kubeconfig-file FILE --as NAME")
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			f, err := getFleet(cmd.Context(), c, flags.namespace, args[0])
			if err != nil {
				return err
			}
			m := &lotsev1.FleetMember{ObjectMeta: metav1.ObjectMeta{Namespace: flags.namespace, Labels: labels},
				Spec: lotsev1.FleetMemberSpec{Fleet: args[0], Region: region, Zone: zone, Provider: provider}}
			var secret *corev1.Secret
			if kubeconfig != "" {
				data, err := os.ReadFile(kubeconfig)
				if err != nil {
					return fmt.Errorf("--kubeconfig-file: %w", err)
				}
				m.Name = as
				// The Secret belongs to the member (created after it, owned
				// by it), so unjoining removes it.
				secret = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: flags.namespace, Name: "fleet-member-" + as,
					Labels: map[string]string{lotsev1.LabelFleet: args[0]}}, Data: map[string][]byte{"kubeconfig": data}}
				m.Spec.KubeconfigSecretRef = &lotsev1.SecretReference{Name: secret.Name}
			} else {
				if _, err := getCluster(cmd.Context(), c, client.ObjectKey{Namespace: flags.namespace, Name: args[1]}); err != nil {
					return err
				}
				m.Name, m.Spec.Cluster = args[1], args[1]
				if as != "" {
					m.Name = as
				}
			}
			if err := c.Create(cmd.Context(), m); err != nil {
				if apierrors.IsAlreadyExists(err) {
					return fmt.Errorf("a member named %s exists already in namespace %s; choose another name with --as", m.Name, m.Namespace)
				}
				return explain(err)
			}
			if secret != nil && createIdentity {
				// The kubeconfig given is used once, to give the fleet its
				// own least-privileged identity there; only that is stored.
				custom, err := fleetCustomKinds(cmd.Context(), c, f)
				if err != nil {
					_ = c.Delete(cmd.Context(), m)
					return fmt.Errorf("listing the fleet's CRDs, whose kinds the member's identity may manage: %w", err)
				}
				own, err := memberIdentity(cmd.Context(), secret.Data["kubeconfig"], flags.namespace, args[0], m.Name, custom)
				if err != nil {
					_ = c.Delete(cmd.Context(), m)
					return err
				}
				secret.Data["kubeconfig"] = own
				secret.Annotations = map[string]string{fleetcontroller.AnnotationIdentity: access.Name(flags.namespace, args[0], m.Name)}
			}
			if secret != nil {
				secret.OwnerReferences = []metav1.OwnerReference{{APIVersion: lotsev1.GroupVersion.String(), Kind: "FleetMember",
					Name: m.Name, UID: m.UID}}
				if err := c.Create(cmd.Context(), secret); err != nil {
					_ = c.Delete(cmd.Context(), m)
					if createIdentity {
						revokeGiven(cmd.Context(), kubeconfig, flags.namespace, args[0], m.Name)
					}
					return explain(err)
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s joined fleet %s\n", m.Name, args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&as, "as", "", "the member's name in the fleet (default: the cluster's name)")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig-file", "", "kubeconfig of a cluster Lotse does not manage; used once to create the fleet's own identity there")
	cmd.Flags().BoolVar(&createIdentity, "create-identity", true, "with --kubeconfig-file: create a least-privileged ServiceAccount for the fleet in the member and store only its token (false: store the kubeconfig as given)")
	cmd.Flags().StringVar(&region, "region", "", "the member's region for placement (default: read from the member)")
	cmd.Flags().StringVar(&zone, "zone", "", "the member's zone for placement (default: read from the member)")
	cmd.Flags().StringVar(&provider, "provider", "", "the member's provider for placement")
	cmd.Flags().StringToStringVar(&labels, "labels", nil, "labels policies select the member by (key=value,...)")
	return cmd
}

func newFleetUnjoinCommand(flags *clientFlags) *cobra.Command {
	var keep, waitGone bool
	cmd := &cobra.Command{
		Use:   "unjoin FLEET MEMBER",
		Short: "Remove a member from a fleet, and what the fleet put there (unless --keep-resources)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return fmt.Errorf("usage: lotse fleet unjoin FLEET MEMBER")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			m := &lotsev1.FleetMember{}
			err = c.Get(cmd.Context(), client.ObjectKey{Namespace: flags.namespace, Name: args[1]}, m)
			if err != nil && !apierrors.IsNotFound(err) {
				return explain(err)
			}
			if err != nil || m.Spec.Fleet != args[0] {
				return fmt.Errorf("%s is not a member of fleet %s (see `lotse fleet status %s`)", args[1], args[0], args[0])
			}
			if keep {
				before := m.DeepCopy()
				if m.Annotations == nil {
					m.Annotations = map[string]string{}
				}
				m.Annotations[fleetcontroller.AnnotationKeepResources] = "true"
				if err := c.Patch(cmd.Context(), m, client.MergeFrom(before)); err != nil {
					return explain(err)
				}
			}
			if err := c.Delete(cmd.Context(), m); err != nil {
				return explain(err)
			}
			if waitGone {
				err := wait.PollUntilContextTimeout(cmd.Context(), time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
					return apierrors.IsNotFound(c.Get(ctx, client.ObjectKeyFromObject(m), &lotsev1.FleetMember{})), nil
				})
				if err != nil {
					return fmt.Errorf("%s still leaving fleet %s: see its events (kubectl describe fleetmember %s)", args[1], args[0], args[1])
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s left fleet %s\n", args[1], args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&keep, "keep-resources", false, "leave what the fleet put into the member")
	cmd.Flags().BoolVar(&waitGone, "wait", true, "wait until the member has left")
	return cmd
}

func newFleetKubeconfigCommand(flags *clientFlags) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "kubeconfig NAME",
		Short: "Print the admin kubeconfig of a fleet's API",
		Args:  exactlyOneName("lotse fleet kubeconfig NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			f, err := getFleet(cmd.Context(), c, flags.namespace, args[0])
			if err != nil {
				return err
			}
			if f.Status.KubeconfigSecret == "" {
				return fmt.Errorf("fleet %s has no API yet (%s); see `lotse fleet status %s`", f.Name, f.Status.Phase, f.Name)
			}
			secret := &corev1.Secret{}
			if err := c.Get(cmd.Context(), client.ObjectKey{Namespace: f.Namespace, Name: f.Status.KubeconfigSecret}, secret); err != nil {
				return explain(err)
			}
			if cp := fleetcontroller.ControlPlaneName(f.Name); !clustercontroller.IsClusterKubeconfig(secret, cp) {
				return fmt.Errorf("the Secret %s/%s is not the kubeconfig Lotse wrote for the fleet's API (cluster %s; it lacks Lotse's label): not using it; Lotse replaces it", f.Namespace, secret.Name, cp)
			}
			if file != "" {
				return fsutil.WriteFileAtomic(file, secret.Data["kubeconfig"], 0o600)
			}
			_, err = cmd.OutOrStdout().Write(secret.Data["kubeconfig"])
			return err
		},
	}
	cmd.Flags().StringVarP(&file, "output-file", "f", "", "write to this file (mode 0600) instead of stdout")
	return cmd
}

// memberIdentity creates the fleet's identity in a member with the
// kubeconfig given at join time and returns the identity's kubeconfig.
func memberIdentity(ctx context.Context, given []byte, namespace, fleet, member string, custom []access.Custom) ([]byte, error) {
	cfg, err := clientcmd.RESTConfigFromKubeConfig(given)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig-file: %w", err)
	}
	cfg.Timeout = 30 * time.Second
	own, err := access.Grant(ctx, cfg, namespace, fleet, member, custom...)
	if err != nil {
		// Whatever was made goes again (the role owns the rest).
		_ = access.Revoke(ctx, cfg, namespace, fleet, member)
		return nil, fmt.Errorf("creating the fleet's identity in the member with --kubeconfig-file (it needs the rights to create a namespace, a ServiceAccount, "+
			"a Secret, a ClusterRole and a ClusterRoleBinding there; or pass --create-identity=false to store the kubeconfig as it is): %w", err)
	}
	return own, nil
}

// fleetCustomKinds are the kinds of the CRDs in a fleet's API that a
// member's identity may be given rights on (access.CustomGroup): the fleet
// propagates them. A fleet without an API yet has none.
func fleetCustomKinds(ctx context.Context, c client.Client, f *lotsev1.Fleet) ([]access.Custom, error) {
	if f.Status.KubeconfigSecret == "" {
		return nil, nil
	}
	secret := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: f.Namespace, Name: f.Status.KubeconfigSecret}, secret); err != nil {
		return nil, err
	}
	if !clustercontroller.IsClusterKubeconfig(secret, fleetcontroller.ControlPlaneName(f.Name)) {
		return nil, fmt.Errorf("the Secret %s/%s is not the kubeconfig Lotse wrote for the fleet's API", f.Namespace, secret.Name)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(secret.Data["kubeconfig"])
	if err != nil {
		return nil, err
	}
	cfg.Timeout = 30 * time.Second
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	crds, err := dc.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []access.Custom
	for _, crd := range crds.Items {
		group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
		plural, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "plural")
		if access.CustomGroup(group) {
			out = append(out, access.Custom{CRD: crd.GetName(), Group: group, Resource: plural})
		}
	}
	return out, nil
}

// revokeGiven removes the identity made with the kubeconfig given at join
// time, when the join fails after it was made.
func revokeGiven(ctx context.Context, file, namespace, fleet, member string) {
	data, err := os.ReadFile(file)
	if err != nil {
		return
	}
	if cfg, err := clientcmd.RESTConfigFromKubeConfig(data); err == nil {
		cfg.Timeout = 30 * time.Second
		_ = access.Revoke(ctx, cfg, namespace, fleet, member)
	}
}
