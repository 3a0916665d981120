package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	clustercontroller "github.com/lotse/lotse/internal/controller/cluster"
)

// rotateOperations maps a kind to its start and complete operations.
var rotateOperations = map[string][2]string{
	"all":                                   {lotsev1.OperationRotateCredentialsStart, lotsev1.OperationRotateCredentialsComplete},
	clustercontroller.KindServiceAccountKey: {lotsev1.OperationRotateServiceAccountKeyStart, lotsev1.OperationRotateServiceAccountKeyDone},
	clustercontroller.KindEtcdEncryptionKey: {lotsev1.OperationRotateEtcdEncryptionKeyStart, lotsev1.OperationRotateEtcdEncryptionKeyDone},
	clustercontroller.KindCA:                {lotsev1.OperationRotateCAStart, lotsev1.OperationRotateCADone},
}

func rotationStatus(cl *lotsev1.Cluster, kind string) *lotsev1.RotationStatus {
	return clustercontroller.RotationStatusOf(&cl.Status, kind)
}

func newClusterRotateCommand(flags *clientFlags) *cobra.Command {
	var complete, noWait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "rotate NAME ca|service-account-key|etcd-encryption-key|all [--complete]",
		Short: "Rotate a cluster's credentials in two phases",
		Long: "Phase 1 (without --complete) adds a new credential and uses it while the old one is still\n" +
			"accepted: a new cluster CA is trusted everywhere and signs every certificate again (old\n" +
			"kubeconfigs keep working; get the new one with lotse cluster kubeconfig); a new\n" +
			"service-account key signs tokens (old tokens still verify); a new etcd\n" +
			"encryption key encrypts and every encrypted object is rewritten with it (the old key still\n" +
			"decrypts). Phase 2 (--complete) removes the old credential. Each waits until the control plane\n" +
			"runs the change everywhere (one instance at a time) unless --no-wait; status.credentials.rotation\n" +
			"shows the phase of each kind.",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return fmt.Errorf("usage: lotse cluster rotate NAME ca|service-account-key|etcd-encryption-key|all [--complete]")
			}
			if _, ok := rotateOperations[args[1]]; !ok {
				return fmt.Errorf("unknown credential %q: rotate ca, service-account-key, etcd-encryption-key or all", args[1])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name, kind := args[0], args[1]
			c, err := flags.client()
			if err != nil {
				return err
			}
			key := client.ObjectKey{Namespace: flags.namespace, Name: name}
			cl, err := getCluster(cmd.Context(), c, key)
			if err != nil {
				return err
			}
			kinds := []string{kind}
			if kind == "all" {
				kinds = clustercontroller.RotationKinds
				if complete {
					kinds = clustercontroller.CompletableKinds(&cl.Status, kinds)
				}
			}
			// What the controller would refuse, refused here with the fix.
			for _, k := range kinds {
				rs := rotationStatus(cl, k)
				phase := ""
				if rs != nil {
					phase = rs.Phase
				}
				switch {
				case complete && phase == lotsev1.RotationCompleting:
					return fmt.Errorf("the %s rotation of %s is completing already; wait for it", k, key)
				case complete && phase == lotsev1.RotationCompleted:
					return fmt.Errorf("the last %s rotation of %s is completed; start a new one first: lotse cluster rotate %s %s", k, key, name, k)
				case complete && phase == lotsev1.RotationPreparing:
					return fmt.Errorf("the %s rotation of %s is still preparing; complete it once `lotse cluster get %s` shows it Prepared", k, key, name)
				case complete && phase != lotsev1.RotationPrepared:
					return fmt.Errorf("no %s rotation of %s was started; start one first: lotse cluster rotate %s %s", k, key, name, k)
				case !complete && phase == lotsev1.RotationPrepared:
					return fmt.Errorf("the %s rotation of %s is prepared; complete it first: lotse cluster rotate %s %s --complete", k, key, name, k)
				case !complete && (phase == lotsev1.RotationPreparing || phase == lotsev1.RotationCompleting):
					return fmt.Errorf("a %s rotation of %s is running (%s); wait for it", k, key, phase)
				}
			}
			if cl.Hibernating() || cl.Status.Phase == lotsev1.PhaseHibernated {
				return fmt.Errorf("cluster %s is hibernated; wake it first: lotse cluster wake %s", key, name)
			}
			op := rotateOperations[kind][0]
			want := lotsev1.RotationPrepared
			if complete {
				op, want = rotateOperations[kind][1], lotsev1.RotationCompleted
			}
			// What status said before: a request is taken when its time moves.
			seen := map[string]time.Time{}
			for _, k := range kinds {
				if rs := rotationStatus(cl, k); rs != nil {
					since := rs.LastInitiationTime
					if complete {
						since = rs.LastCompletionTriggeredTime
					}
					if since != nil {
						seen[k] = since.Time
					}
				}
			}
			if err := patchCluster(cmd, flags, name, map[string]any{"metadata": map[string]any{"annotations": map[string]any{
				lotsev1.OperationAnnotation: op}}}); err != nil {
				return err
			}
			if noWait {
				fmt.Fprintf(cmd.OutOrStdout(), "%s of cluster %s requested; status.credentials.rotation shows the progress\n", op, key)
				return nil
			}
			return waitCluster(cmd.Context(), c, key, timeout, func(cl *lotsev1.Cluster) (bool, error) {
				if cl.Annotations[lotsev1.OperationAnnotation] == op {
					return false, nil
				}
				// The annotation is gone: taken (a fresh time in status) or
				// refused (an event says why).
				for _, k := range kinds {
					rs := rotationStatus(cl, k)
					var since *metav1.Time
					if rs != nil {
						since = rs.LastInitiationTime
						if complete {
							since = rs.LastCompletionTriggeredTime
						}
					}
					if since == nil || !since.Time.After(seen[k]) {
						return true, fmt.Errorf("%s of cluster %s was refused; the cluster's events say why (kubectl get events --field-selector regarding.name=%s)", op, key, name)
					}
					if rs.Phase != want {
						return false, nil
					}
				}
				fmt.Fprintf(cmd.OutOrStdout(), "cluster %s: %v %s\n", key, kinds, want)
				return true, nil
			})
		},
	}
	cmd.Flags().BoolVar(&complete, "complete", false, "phase 2: remove the old credentials")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the rotation is requested")
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Minute, "how long to wait")
	return cmd
}
