package cli

// Backup commands: take a snapshot now, list the snapshots, restore one in
// place or into a new cluster.

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/backup"
)

func newClusterBackupCommand(flags *clientFlags) *cobra.Command {
	var timeout time.Duration
	var noWait bool
	cmd := &cobra.Command{
		Use:   "backup NAME",
		Short: "Take an etcd snapshot of a cluster now",
		Long: "Annotates the cluster with lotse.dev/operation=backup: Lotse takes a consistent etcd snapshot,\n" +
			"seals it with the cluster's credentials under the manager's backup key and stores it where\n" +
			"spec.backup says (default: backups/ in the manager's state directory). Waits for the result\n" +
			"unless --no-wait; `lotse cluster backups NAME` lists the snapshots.",
		Args: exactlyOneName("lotse cluster backup NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			key := client.ObjectKey{Namespace: flags.namespace, Name: args[0]}
			requested := time.Now().Add(-time.Second)
			if err := patchCluster(cmd, flags, args[0], map[string]any{"metadata": map[string]any{"annotations": map[string]any{
				lotsev1.OperationAnnotation: lotsev1.OperationBackup}}}); err != nil {
				return err
			}
			if noWait {
				fmt.Fprintf(cmd.OutOrStdout(), "backup of cluster %s requested; status.backup shows the result\n", key)
				return nil
			}
			return waitCluster(cmd.Context(), c, key, timeout, func(cl *lotsev1.Cluster) (bool, error) {
				b := cl.Status.Backup
				switch {
				case b == nil:
					return false, nil
				case b.LastSuccessTime != nil && b.LastSuccessTime.After(requested) && cl.Annotations[lotsev1.OperationAnnotation] != lotsev1.OperationBackup:
					fmt.Fprintf(cmd.OutOrStdout(), "snapshot %s of cluster %s stored in %s\n", b.LastSnapshot, key, b.Destination)
					return true, nil
				case b.LastFailureTime != nil && b.LastFailureTime.After(requested) && b.LastError != "":
					return true, fmt.Errorf("backup of cluster %s failed: %s", key, b.LastError)
				}
				return false, nil
			})
		},
	}
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the backup is requested")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "how long to wait for the snapshot")
	return cmd
}

func newClusterBackupsCommand(flags *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "backups NAME",
		Short: "List a cluster's snapshots",
		Args:  exactlyOneName("lotse cluster backups NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			cl, err := getCluster(cmd.Context(), c, client.ObjectKey{Namespace: flags.namespace, Name: args[0]})
			if err != nil {
				return err
			}
			printBackups(cmd.OutOrStdout(), cl)
			return nil
		},
	}
}

func printBackups(out io.Writer, cl *lotsev1.Cluster) {
	b := cl.Status.Backup
	if b == nil || len(b.Snapshots) == 0 {
		fmt.Fprintf(out, "cluster %s/%s has no snapshots; `lotse cluster backup %s` takes one\n", cl.Namespace, cl.Name, cl.Name)
		if b != nil && b.LastError != "" {
			fmt.Fprintf(out, "last backup failed: %s\n", b.LastError)
		}
		return
	}
	fmt.Fprintf(out, "snapshots of %s/%s in %s:\n", cl.Namespace, cl.Name, b.Destination)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTAKEN\tSIZE")
	for i := len(b.Snapshots) - 1; i >= 0; i-- {
		s := b.Snapshots[i]
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, s.Time.UTC().Format(time.RFC3339), humanBytes(s.Size))
	}
	tw.Flush()
	if b.NextScheduled != nil {
		fmt.Fprintf(out, "next scheduled snapshot: %s\n", b.NextScheduled.UTC().Format(time.RFC3339))
	}
	if b.LastError != "" {
		fmt.Fprintf(out, "last backup failed: %s\n", b.LastError)
	}
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func newClusterRestoreCommand(flags *clientFlags) *cobra.Command {
	var from, into string
	var timeout time.Duration
	var noWait bool
	cmd := &cobra.Command{
		Use:   "restore NAME --from SNAPSHOT [--into NEW]",
		Short: "Restore a cluster's etcd from a snapshot, in place or into a new cluster",
		Long: "In place: the cluster's control plane stops, its etcd data is replaced by the snapshot's and it\n" +
			"starts again; machines and nodes stay. Objects written after the snapshot are gone.\n" +
			"With --into NEW: a new cluster with NAME's spec starts from the snapshot (its objects and\n" +
			"encrypted Secrets) with a CA and service-account key of its own; NAME is not touched.\n" +
			"Snapshots: `lotse cluster backups NAME`.",
		Args: exactlyOneName("lotse cluster restore NAME --from SNAPSHOT [--into NEW]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if from == "" {
				return fmt.Errorf("--from is required: the snapshot to restore (`lotse cluster backups %s` lists them)", args[0])
			}
			if err := backup.CheckSnapshotName(from); err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			c, err := flags.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			source := &lotsev1.Cluster{}
			sourceKey := client.ObjectKey{Namespace: flags.namespace, Name: args[0]}
			if err := c.Get(ctx, sourceKey, source); err != nil {
				if apierrors.IsNotFound(err) {
					return fmt.Errorf("cluster %s not found; to restore a deleted cluster's snapshot, create a Cluster with its spec.backup and the annotation %s: %s/%s/%s", sourceKey, lotsev1.RestoreAnnotation, sourceKey.Namespace, sourceKey.Name, from)
				}
				return explain(err)
			}
			ref := backup.Ref{Namespace: sourceKey.Namespace, Cluster: sourceKey.Name, Snapshot: from}
			target := sourceKey
			// Status times have seconds: a second of slack, taken before
			// the request so a fast answer is not missed.
			requested := time.Now().Add(-time.Second)
			if into == "" {
				if err := patchCluster(cmd, flags, args[0], map[string]any{"metadata": map[string]any{"annotations": map[string]any{
					lotsev1.RestoreAnnotation: from}}}); err != nil {
					return err
				}
			} else {
				if err := checkName(into, "--into"); err != nil {
					return err
				}
				target = client.ObjectKey{Namespace: flags.namespace, Name: into}
				clone := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: target.Namespace, Name: target.Name,
					Annotations: map[string]string{lotsev1.RestoreAnnotation: ref.String()}}}
				clone.Spec = *source.Spec.DeepCopy()
				// The new cluster gets a nodes network of its own, wakes up
				// at once and keeps its snapshots apart (under its name).
				clone.Spec.Networking.Nodes = ""
				clone.Spec.Hibernation = nil
				err := c.Create(ctx, clone)
				if apierrors.IsForbidden(err) && strings.Contains(err.Error(), "spec.backup.directory and spec.backup.s3") &&
					clone.Spec.Backup != nil && (clone.Spec.Backup.Directory != "" || clone.Spec.Backup.S3 != nil) {
					// Only the provider sets a backup destination; the
					// restore reads the snapshot from the source's anyway,
					// and the new cluster backs up to the default one.
					clone.Spec.Backup.Directory, clone.Spec.Backup.S3 = "", nil
					fmt.Fprintf(cmd.ErrOrStderr(), "cluster %s backs up to the default destination (only the provider sets another)\n", target)
					err = c.Create(ctx, clone)
				}
				if err != nil {
					if apierrors.IsAlreadyExists(err) {
						return fmt.Errorf("cluster %s exists already; --into names a new cluster", target)
					}
					return explain(err)
				}
			}
			if noWait {
				fmt.Fprintf(cmd.OutOrStdout(), "restore of %s into cluster %s requested; status.restore shows the progress\n", ref, target)
				return nil
			}
			return waitCluster(ctx, c, target, timeout, func(cl *lotsev1.Cluster) (bool, error) {
				done, err := restoreOutcome(cl, ref, requested)
				if done && err == nil {
					fmt.Fprintf(cmd.OutOrStdout(), "cluster %s restored from %s: %s\n", target, cl.Status.Restore.From, cl.Status.Restore.Message)
				}
				return done, err
			})
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "the snapshot to restore (see `lotse cluster backups NAME`)")
	cmd.Flags().StringVar(&into, "into", "", "create this new cluster from the snapshot instead of restoring NAME in place")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the restore is requested")
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Minute, "how long to wait for the restore")
	return cmd
}

// restoreOutcome says whether status shows the outcome of the restore
// from ref requested at requested (less a second: status times have
// seconds only), and the refusal if it was refused.
func restoreOutcome(cl *lotsev1.Cluster, ref backup.Ref, requested time.Time) (bool, error) {
	rs := cl.Status.Restore
	if rs == nil || rs.StartTime == nil || rs.StartTime.Before(&metav1.Time{Time: requested}) || rs.From != ref.String() {
		return false, nil
	}
	// A cluster that has run loses the annotation once the manager has
	// written this request's outcome: until then, status may still hold
	// an earlier request's from the same second. One that has not run
	// keeps it when refused (it tries again every minute).
	if _, pending := cl.Annotations[lotsev1.RestoreAnnotation]; pending && cl.Status.KubernetesVersion != "" {
		return false, nil
	}
	switch rs.Step {
	case lotsev1.RestoreStepSucceeded:
		return true, nil
	case lotsev1.RestoreStepFailed:
		return true, fmt.Errorf("restore of cluster %s/%s from %s: %s", cl.Namespace, cl.Name, rs.From, rs.Message)
	}
	return false, nil
}

// waitCluster polls a Cluster until done says so (or returns an error).
func waitCluster(ctx context.Context, c client.Client, key client.ObjectKey, timeout time.Duration, done func(*lotsev1.Cluster) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		cl := &lotsev1.Cluster{}
		if err := c.Get(ctx, key, cl); err != nil && !apierrors.IsNotFound(err) {
			return explain(err)
		} else if err == nil {
			if ok, err := done(cl); ok || err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster %s: no result after %s (it goes on; `lotse cluster get %s` shows where it is)", key, timeout, key.Name)
		case <-time.After(time.Second):
		}
	}
}

// checkName refuses a cluster name the API would refuse, naming the flag.
func checkName(name, flag string) error {
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		return fmt.Errorf("%s %q is not a valid cluster name: %s", flag, name, strings.Join(errs, "; "))
	}
	return nil
}
