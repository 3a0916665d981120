package cli

// Day-2 commands: upgrade a cluster, run its maintenance now, hibernate
// and wake it.

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// patchCluster merge-patches a Cluster, explaining a missing one.
func patchCluster(cmd *cobra.Command, flags *clientFlags, name string, patch map[string]any) error {
	c, err := flags.client()
	if err != nil {
		return err
	}
	data, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	cl := &lotsev1.Cluster{}
	cl.Namespace, cl.Name = flags.namespace, name
	if err := c.Patch(cmd.Context(), cl, client.RawPatch(types.MergePatchType, data)); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("cluster %s/%s not found; see `lotse cluster list -A`", flags.namespace, name)
		}
		return explain(err)
	}
	return nil
}

// getCluster reads a Cluster, explaining a missing one.
func getCluster(ctx context.Context, c client.Client, key client.ObjectKey) (*lotsev1.Cluster, error) {
	cl := &lotsev1.Cluster{}
	if err := c.Get(ctx, key, cl); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("cluster %s not found; see `lotse cluster list -A`", key)
		}
		return nil, explain(err)
	}
	return cl, nil
}

func newClusterUpgradeCommand(flags *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "upgrade NAME VERSION",
		Short: "Upgrade a cluster to a version of the catalog (a patch, or the next minor)",
		Long: "Sets spec.kubernetes.version. Lotse then updates etcd, the API servers, controller-managers\n" +
			"and schedulers one instance at a time and rolls the worker pools; `lotse cluster get NAME`\n" +
			"shows the progress in status.upgrade. Versions: `lotse release list`.",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return fmt.Errorf("usage: lotse cluster upgrade NAME VERSION (e.g. lotse cluster upgrade c1 1.37.2)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := patchCluster(cmd, flags, args[0], map[string]any{"spec": map[string]any{"kubernetes": map[string]any{"version": args[1]}}}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cluster %s/%s is being upgraded to %s\n", flags.namespace, args[0], args[1])
			return nil
		},
	}
}

func newClusterMaintainCommand(flags *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "maintain NAME",
		Short: "Run a cluster's maintenance now, outside its window",
		Long: "Annotates the cluster with lotse.dev/operation=maintain: Lotse applies the pending automatic\n" +
			"updates (status.maintenance.pending) at once and removes the annotation.",
		Args: exactlyOneName("lotse cluster maintain NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := patchCluster(cmd, flags, args[0], map[string]any{"metadata": map[string]any{"annotations": map[string]any{
				lotsev1.OperationAnnotation: lotsev1.OperationMaintain}}}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "maintenance of cluster %s/%s requested; status.maintenance shows what it did\n", flags.namespace, args[0])
			return nil
		},
	}
}

// newClusterHibernationCommand sets spec.hibernation.enabled: hibernate
// (true) or wake (false).
func newClusterHibernationCommand(flags *clientFlags, hibernate bool) *cobra.Command {
	use, short, long, done := "hibernate NAME", "Put a cluster to sleep: workloads drained, machines and control plane stopped, data kept",
		"Sets spec.hibernation.enabled to true. Lotse drains the workloads, stops the machines (their disks\n"+
			"and node-local volumes stay) and the control plane (etcd's data stays); the API endpoint answers\n"+
			"503 with a message until the cluster is woken with `lotse cluster wake NAME`.",
		"cluster %s/%s is going to sleep; `lotse cluster get %s` shows Hibernated when it is\n"
	if !hibernate {
		use, short, long, done = "wake NAME", "Wake a hibernated cluster",
			"Sets spec.hibernation.enabled to false: the control plane and the machines start again and the\n"+
				"nodes hibernation cordoned are uncordoned.",
			"cluster %s/%s is waking up; `lotse cluster get %s` shows Running when it is\n"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  exactlyOneName("lotse cluster " + use),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := patchCluster(cmd, flags, args[0], map[string]any{"spec": map[string]any{"hibernation": map[string]any{"enabled": hibernate}}}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), done, flags.namespace, args[0], args[0])
			return nil
		},
	}
}
