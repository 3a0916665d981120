package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

func newSeedCommand() *cobra.Command {
	flags := &clientFlags{}
	cmd := &cobra.Command{
		Use:     "seed",
		Aliases: []string{"seeds"},
		Short:   "Seeds: clusters that host other clusters' control planes as pods",
	}
	cmd.PersistentFlags().StringVar(&flags.kubeconfig, "kubeconfig", "", "kubeconfig of the management API (default $LOTSE_KUBECONFIG, else the one lotse up wrote)")
	cmd.AddCommand(newSeedAddCommand(flags), newSeedListCommand(flags), newSeedDeleteCommand(flags))
	return cmd
}

func newSeedAddCommand(flags *clientFlags) *cobra.Command {
	var cluster, namespace, secretNamespace, secretName, region string
	var managementCluster bool
	var capacity int32
	var labels, serviceAnnotations map[string]string
	serviceType := lotsev1.SeedServiceLoadBalancer
	cmd := &cobra.Command{
		Use:   "add NAME (--cluster CLUSTER | --kubeconfig-secret NAMESPACE/NAME | --management-cluster)",
		Short: "Register a seed: a Lotse cluster of this management plane, or any cluster by a kubeconfig Secret",
		Args:  exactlyOneName("lotse seed add NAME --cluster CLUSTER"),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case managementCluster && (cluster != "" || secretName != ""):
				return fmt.Errorf("--management-cluster needs no kubeconfig: drop --cluster and --kubeconfig-secret")
			case managementCluster:
			case cluster != "" && secretName != "":
				return fmt.Errorf("--cluster and --kubeconfig-secret both name the seed's kubeconfig; give one")
			case cluster != "":
				secretNamespace, secretName = namespace, cluster+"-kubeconfig"
			case secretName == "":
				return fmt.Errorf("the seed's kubeconfig is missing: give --cluster CLUSTER (a Lotse cluster), --kubeconfig-secret NAMESPACE/NAME, or --management-cluster")
			}
			if serviceType != lotsev1.SeedServiceLoadBalancer && serviceType != lotsev1.SeedServiceNodePort {
				return fmt.Errorf("--api-server-service %q: want LoadBalancer (the seed's load balancers give each API an address) or NodePort (for a seed without them)", serviceType)
			}
			c, err := flags.client()
			if err != nil {
				return err
			}
			if cluster != "" {
				if err := c.Get(cmd.Context(), client.ObjectKey{Namespace: namespace, Name: cluster}, &lotsev1.Cluster{}); err != nil {
					if apierrors.IsNotFound(err) {
						return fmt.Errorf("--cluster: no cluster %s/%s (see `lotse cluster list -A`)", namespace, cluster)
					}
					return explain(err)
				}
			}
			s := &lotsev1.Seed{ObjectMeta: metav1.ObjectMeta{Name: args[0], Labels: labels}}
			if managementCluster {
				s.Spec.ManagementCluster = true
			} else {
				s.Spec.KubeconfigSecretRef = &lotsev1.NamespacedSecretReference{Namespace: secretNamespace, Name: secretName}
			}
			s.Spec.Region = region
			s.Spec.Capacity.ControlPlanes = &capacity
			s.Spec.APIServerService = lotsev1.SeedAPIServerService{Type: serviceType, Annotations: serviceAnnotations}
			if err := c.Create(cmd.Context(), s); err != nil {
				if apierrors.IsAlreadyExists(err) {
					return fmt.Errorf("seed %s already exists", args[0])
				}
				return explain(err)
			}
			how := fmt.Sprintf("kubeconfig from Secret %s/%s", secretNamespace, secretName)
			if managementCluster {
				how = "the management cluster, reached with the manager's own identity"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "seed %s added (%s); clusters with spec.controlPlane.seedSelector matching it can run there\n", args[0], how)
			return nil
		},
	}
	cmd.Flags().StringVar(&cluster, "cluster", "", "the Lotse cluster that becomes the seed (its NAME-kubeconfig Secret)")
	cmd.Flags().BoolVar(&managementCluster, "management-cluster", false, "the cluster of the management API is the seed (a manager installed there by the Helm chart)")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "namespace of --cluster")
	cmd.Flags().Var(&secretRefValue{namespace: &secretNamespace, name: &secretName}, "kubeconfig-secret", "NAMESPACE/NAME of a Secret with key kubeconfig (inline credentials) of any cluster")
	cmd.Flags().StringVar(&region, "region", "local", "region of the seed")
	cmd.Flags().Int32Var(&capacity, "capacity", 20, "most control planes the seed hosts")
	cmd.Flags().StringToStringVar(&labels, "label", nil, "labels clusters select the seed by (KEY=VALUE, repeatable)")
	cmd.Flags().StringVar(&serviceType, "api-server-service", serviceType, "how the seed exposes hosted API servers: LoadBalancer (its address is the cluster's endpoint) or NodePort (for a seed without load balancers)")
	cmd.Flags().StringToStringVar(&serviceAnnotations, "api-server-service-annotation", nil, "annotation of the API servers' Services (KEY=VALUE, repeatable), e.g. lb.lotse.dev/internal=true")
	return cmd
}

// secretRefValue parses NAMESPACE/NAME.
type secretRefValue struct{ namespace, name *string }

func (v *secretRefValue) String() string {
	if v.name == nil || *v.name == "" {
		return ""
	}
	return *v.namespace + "/" + *v.name
}

func (v *secretRefValue) Set(s string) error {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' && i > 0 && i < len(s)-1 {
			*v.namespace, *v.name = s[:i], s[i+1:]
			return nil
		}
	}
	return fmt.Errorf("%q is not NAMESPACE/NAME", s)
}

func (v *secretRefValue) Type() string { return "NAMESPACE/NAME" }

func newSeedListCommand(flags *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List seeds with their load and readiness",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			list := &lotsev1.SeedList{}
			if err := c.List(cmd.Context(), list); err != nil {
				return explain(err)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tREGION\tCONTROL PLANES\tNODES\tREADY\tMESSAGE")
			for _, s := range list.Items {
				ready, msg := "Unknown", ""
				if cond := meta.FindStatusCondition(s.Status.Conditions, lotsev1.ConditionSeedReady); cond != nil {
					ready, msg = string(cond.Status), cond.Message
				}
				if cond := meta.FindStatusCondition(s.Status.Conditions, lotsev1.ConditionSeedDeletionBlocked); cond != nil && cond.Status == metav1.ConditionTrue {
					msg = cond.Message
				}
				fmt.Fprintf(w, "%s\t%s\t%d/%d\t%d\t%s\t%s\n", s.Name, s.Spec.Region, s.Status.ControlPlanes, s.ControlPlaneCapacity(), s.Status.ReadyNodes, ready, msg)
			}
			return w.Flush()
		},
	}
}

func newSeedDeleteCommand(flags *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Remove a seed; it goes once it hosts no control plane",
		Args:  exactlyOneName("lotse seed delete NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			if err := c.Delete(cmd.Context(), &lotsev1.Seed{ObjectMeta: metav1.ObjectMeta{Name: args[0]}}); err != nil {
				if apierrors.IsNotFound(err) {
					return fmt.Errorf("no seed %s (see `lotse seed list`)", args[0])
				}
				return explain(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "seed %s is being deleted; it goes once the clusters whose control planes it hosts are deleted\n", args[0])
			return nil
		},
	}
}
