package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	osuser "os/user"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	clustercontroller "github.com/lotse/lotse/internal/controller/cluster"
	"github.com/lotse/lotse/internal/fsutil"
	untrustedkubeconfig "github.com/lotse/lotse/internal/kubeconfig"
	"github.com/lotse/lotse/internal/managementplane"
	"github.com/lotse/lotse/internal/manager"
	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/releases"
	"github.com/lotse/lotse/internal/userkubeconfig"
)

// clientFlags find the management API.
type clientFlags struct {
	kubeconfig string
	namespace  string
	project    string
}

func (f *clientFlags) register(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig of the management API (default $LOTSE_KUBECONFIG, else the one lotse up wrote)")
	cmd.PersistentFlags().StringVarP(&f.namespace, "namespace", "n", "default", "namespace of the clusters")
	cmd.PersistentFlags().StringVarP(&f.project, "project", "p", "", "project whose clusters these are (its namespace, project-NAME, instead of --namespace)")
	cmd.PersistentPreRunE = func(c *cobra.Command, _ []string) error { return f.resolveProject(c.Flags().Changed("namespace")) }
}

// resolveProject turns --project into the project's namespace.
func (f *clientFlags) resolveProject(namespaceGiven bool) error {
	if f.project == "" {
		return nil
	}
	ns := lotsev1.ProjectNamespacePrefix + f.project
	if namespaceGiven && f.namespace != ns {
		return fmt.Errorf("--project %s and --namespace %s disagree: project %s keeps its clusters in namespace %s; give one of them", f.project, f.namespace, f.project, ns)
	}
	f.namespace = ns
	return nil
}

// kubeconfigPath resolves --kubeconfig, $LOTSE_KUBECONFIG, then the default state directory.
func (f *clientFlags) kubeconfigPath() (string, error) {
	if f.kubeconfig != "" {
		return f.kubeconfig, nil
	}
	if env := os.Getenv("LOTSE_KUBECONFIG"); env != "" {
		return env, nil
	}
	p := filepath.Join(managementplane.DefaultStateDir(), managementplane.KubeconfigFile)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no management plane found: %s does not exist; start one with `lotse up`, or point at one with --kubeconfig or $LOTSE_KUBECONFIG", p)
	}
	return p, nil
}

func (f *clientFlags) client() (client.Client, error) {
	path, err := f.kubeconfigPath()
	if err != nil {
		return nil, err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("read management kubeconfig %s: %w", path, err)
	}
	cfg.Timeout = 30 * time.Second
	return client.New(cfg, client.Options{Scheme: manager.Scheme()})
}

// explain turns common API errors into advice.
func explain(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(err.Error(), "connection refused") {
		return fmt.Errorf("cannot reach the management API (%v); is `lotse up` running?", err)
	}
	if meta.IsNoMatchError(err) {
		return fmt.Errorf("the management API does not know Lotse's Cluster type; is a Lotse manager running against it? (%v)", err)
	}
	// RBAC's refusals read `User "bob" cannot get resource "secrets" ...`;
	// admission refusals explain themselves.
	if apierrors.IsForbidden(err) && strings.Contains(err.Error(), " cannot ") && strings.Contains(err.Error(), " resource ") {
		return fmt.Errorf("%v\n(your role does not allow this: in a project, its owners give roles with `lotse project member set`; projects themselves and their quotas are the provider's)", err)
	}
	return err
}

func newClusterCommand() *cobra.Command {
	flags := &clientFlags{}
	cmd := &cobra.Command{
		Use:     "cluster",
		Aliases: []string{"clusters"},
		Short:   "Create, inspect and delete tenant clusters",
	}
	flags.register(cmd)
	cmd.AddCommand(newClusterCreateCommand(flags), newClusterListCommand(flags), newClusterGetCommand(flags),
		newClusterKubeconfigCommand(flags), newClusterDeleteCommand(flags), newClusterUpgradeCommand(flags), newClusterMaintainCommand(flags),
		newClusterHibernationCommand(flags, true), newClusterHibernationCommand(flags, false),
		newClusterBackupCommand(flags), newClusterBackupsCommand(flags), newClusterRestoreCommand(flags),
		newClusterRotateCommand(flags))
	return cmd
}

func newClusterCreateCommand(flags *clientFlags) *cobra.Command {
	var version, podCIDR, serviceCIDR, encryption, datastore, seedSelector string
	var resources []string
	var ha, wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a cluster",
		Args:  exactlyOneName("lotse cluster create NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rel, err := releases.Lookup(version)
			if err != nil {
				return fmt.Errorf("--kubernetes-version: %w", err)
			}
			if datastore != lotsev1.DatastoreDedicated && datastore != lotsev1.DatastoreShared {
				return fmt.Errorf("--datastore: %q is not a datastore; use dedicated (etcd of its own) or shared (one etcd for many clusters)", datastore)
			}
			c, err := flags.client()
			if err != nil {
				return err
			}
			cluster := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: args[0], Namespace: flags.namespace}}
			cluster.Spec.Kubernetes.Version = rel.Version
			cluster.Spec.ControlPlane.HighAvailability = ha
			cluster.Spec.ControlPlane.Datastore = datastore
			cluster.Spec.Networking.Pods = podCIDR
			cluster.Spec.Networking.Services = serviceCIDR
			cluster.Spec.Encryption.Provider = encryption
			if cmd.Flags().Changed("seed-selector") {
				sel, err := metav1.ParseToLabelSelector(seedSelector)
				if err != nil {
					return fmt.Errorf("--seed-selector: %w", err)
				}
				cluster.Spec.ControlPlane.SeedSelector = sel
			}
			for _, r := range resources {
				cluster.Spec.Encryption.Resources = append(cluster.Spec.Encryption.Resources, lotsev1.EncryptedResource(r))
			}
			if err := c.Create(cmd.Context(), cluster); err != nil {
				if apierrors.IsAlreadyExists(err) {
					return fmt.Errorf("cluster %s/%s already exists; pick another name or delete it with `lotse cluster delete %s`", flags.namespace, args[0], args[0])
				}
				return explain(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cluster %s/%s created (kubernetes %s, high availability %t)\n", flags.namespace, args[0], rel.Version, ha)
			if !wait {
				return nil
			}
			return waitReady(cmd.Context(), c, client.ObjectKeyFromObject(cluster), timeout, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&version, "kubernetes-version", releases.Default().Version, "Kubernetes version from `lotse release list`")
	cmd.Flags().BoolVar(&ha, "ha", false, "highly available control plane: 3 etcd members, 2 API servers")
	cmd.Flags().StringVar(&seedSelector, "seed-selector", "", "run the control plane as pods on a seed whose labels match (e.g. tier=gold; --seed-selector= for any seed; see `lotse seed list`)")
	cmd.Flags().StringVar(&datastore, "datastore", lotsev1.DatastoreDedicated, "where the cluster's data lives: dedicated (etcd of its own) or shared (one etcd for many clusters, a prefix and an etcd user each)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the cluster is Ready, showing its tasks as they complete")
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Minute, "how long --wait waits")
	cmd.Flags().StringVar(&podCIDR, "pod-cidr", "", "pod address range (default 10.244.0.0/16)")
	cmd.Flags().StringVar(&serviceCIDR, "service-cidr", "", "service address range (default 10.96.0.0/16)")
	cmd.Flags().StringVar(&encryption, "encryption-provider", "", "encryption at rest: aescbc (default), aesgcm or secretbox")
	cmd.Flags().StringSliceVar(&resources, "encrypt-resource", nil, "encrypt this resource too, besides secrets (repeatable)")
	return cmd
}

func exactlyOneName(usage string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("expected one name; usage: %s", usage)
		}
		return nil
	}
}

// waitReady polls a cluster and prints each task once it succeeds.
func waitReady(ctx context.Context, c client.Client, key client.ObjectKey, timeout time.Duration, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	printed := map[string]bool{}
	lastDesc := ""
	for {
		cl := &lotsev1.Cluster{}
		if err := c.Get(ctx, key, cl); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("cluster %s not ready after %s (last: %s)", key, timeout, lastDesc)
			}
			return explain(err)
		}
		if op := cl.Status.LastOperation; op != nil {
			for _, t := range op.Tasks {
				if t.State == lotsev1.StateSucceeded && !printed[t.Name] {
					printed[t.Name] = true
					fmt.Fprintf(out, "  %-26s done after %s\n", t.Name, time.Since(start).Round(10*time.Millisecond))
				}
			}
			if len(op.Tasks) == 0 && op.Description != lastDesc {
				fmt.Fprintf(out, "  %s\n", op.Description)
			}
			lastDesc = op.Description
		}
		if cl.Status.ObservedGeneration == cl.Generation && meta.IsStatusConditionTrue(cl.Status.Conditions, lotsev1.ConditionReady) {
			fmt.Fprintf(out, "cluster %s is Ready after %s; endpoint %s\nget its kubeconfig with: lotse cluster kubeconfig %s -n %s > %s.kubeconfig\n",
				key, time.Since(start).Round(10*time.Millisecond), cl.Status.Endpoint, key.Name, key.Namespace, key.Name)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster %s not ready after %s (last: %s)", key, timeout, lastDesc)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func newClusterListCommand(flags *clientFlags) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List clusters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			list := &lotsev1.ClusterList{}
			var opts []client.ListOption
			if !all {
				opts = append(opts, client.InNamespace(flags.namespace))
			}
			if err := c.List(cmd.Context(), list, opts...); err != nil {
				return explain(err)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAMESPACE\tNAME\tVERSION\tHA\tPHASE\tREADY\tPROGRESS\tENDPOINT\tAGE")
			for _, cl := range list.Items {
				ready := "Unknown"
				if cond := meta.FindStatusCondition(cl.Status.Conditions, lotsev1.ConditionReady); cond != nil {
					ready = string(cond.Status)
				}
				progress := ""
				if op := cl.Status.LastOperation; op != nil {
					progress = fmt.Sprintf("%d%%", op.Progress)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%t\t%s\t%s\t%s\t%s\t%s\n", cl.Namespace, cl.Name, cl.Spec.Kubernetes.Version,
					cl.Spec.ControlPlane.HighAvailability, cl.Status.Phase, ready, progress, cl.Status.Endpoint,
					duration.HumanDuration(time.Since(cl.CreationTimestamp.Time)))
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list clusters of every namespace")
	return cmd
}

func newClusterGetCommand(flags *clientFlags) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Show a cluster: phase, endpoint, conditions and tasks",
		Args:  exactlyOneName("lotse cluster get NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			cl, err := getCluster(cmd.Context(), c, client.ObjectKey{Namespace: flags.namespace, Name: args[0]})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch output {
			case "yaml":
				cl.ManagedFields = nil
				data, err := yaml.Marshal(cl)
				if err != nil {
					return err
				}
				_, err = out.Write(data)
				return err
			case "":
			default:
				return fmt.Errorf("--output %q is not supported; use yaml or leave it out", output)
			}
			fmt.Fprintf(out, "Name:        %s/%s\nVersion:     %s\nHA:          %t\nPhase:       %s\nEndpoint:    %s\n",
				cl.Namespace, cl.Name, cl.Spec.Kubernetes.Version, cl.Spec.ControlPlane.HighAvailability, cl.Status.Phase, cl.Status.Endpoint)
			fmt.Fprintf(out, "Pods:        %s\nServices:    %s\nEncryption:  %s\n", cl.Spec.Networking.Pods, cl.Spec.Networking.Services, cl.Spec.Encryption.Provider)
			fmt.Fprintln(out, "Conditions:")
			for _, cond := range cl.Status.Conditions {
				fmt.Fprintf(out, "  %-22s %-6s %s: %s\n", cond.Type, cond.Status, cond.Reason, cond.Message)
			}
			if up := cl.Status.Upgrade; up != nil {
				fmt.Fprintf(out, "Upgrade:     %s -> %s\n", up.FromVersion, up.ToVersion)
				for _, comp := range up.Components {
					fmt.Fprintf(out, "  %-26s %d/%d updated\n", comp.Name, comp.Updated, comp.Total)
				}
			}
			if m := cl.Status.Maintenance; m != nil {
				fmt.Fprintf(out, "Maintenance: next window %s to %s", m.NextWindowBegin.UTC().Format(time.RFC3339), m.NextWindowEnd.UTC().Format(time.RFC3339))
				if len(m.Pending) > 0 {
					fmt.Fprintf(out, "; will do: %s", strings.Join(m.Pending, "; "))
				}
				fmt.Fprintln(out)
				if m.LastRunTime != nil {
					fmt.Fprintf(out, "  last run %s: %s\n", m.LastRunTime.UTC().Format(time.RFC3339), strings.Join(m.LastRunActions, "; "))
				}
			}
			if op := cl.Status.LastOperation; op != nil {
				fmt.Fprintf(out, "Last operation: %s %s %d%%: %s\n", op.Type, op.State, op.Progress, op.Description)
				for _, t := range op.Tasks {
					line := fmt.Sprintf("  %-26s %s", t.Name, t.State)
					if t.Message != "" {
						line += ": " + t.Message
					}
					fmt.Fprintln(out, line)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: yaml")
	return cmd
}

func newClusterKubeconfigCommand(flags *clientFlags) *cobra.Command {
	var file, user, role string
	var groups []string
	var expires time.Duration
	cmd := &cobra.Command{
		Use:   "kubeconfig NAME",
		Short: "Print the admin kubeconfig of a cluster, or a short-lived one for a person (--expires)",
		Long: "Without --expires: the cluster's admin kubeconfig, as Lotse keeps it.\n\n" +
			"With --expires: a kubeconfig whose client certificate the cluster signs for --user and --group and\n" +
			"that expires after the given time (10m to 168h). Its key is made here and never leaves this machine.\n" +
			"The group " + userkubeconfig.AdminGroup + " (the default) is bound to cluster-admin in the cluster; other\n" +
			"groups have the rights the cluster's RBAC gives them. Such certificates end with a completed CA\n" +
			"rotation (lotse cluster rotate NAME ca, then --complete), or lose their rights when their binding\n" +
			"is deleted.\n\n" +
			"With --expires and --role admin|viewer: a kubeconfig in your own name, asked for through a\n" +
			"KubeconfigRequest: what project members use, since it needs no access to the admin kubeconfig.\n" +
			"Viewers get the view role (group " + userkubeconfig.ViewerGroup + "); admin needs the right to change the cluster.",
		Args: exactlyOneName("lotse cluster kubeconfig NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			shortLived := cmd.Flags().Changed("expires")
			if cmd.Flags().Changed("role") {
				switch {
				case !shortLived:
					return fmt.Errorf("--role needs --expires: it asks for a short-lived kubeconfig (e.g. --expires 8h --role viewer)")
				case cmd.Flags().Changed("user") || cmd.Flags().Changed("group"):
					return fmt.Errorf("--role asks for a kubeconfig in your own name (your management-API user) and the role's group; leave out --user and --group")
				case role != string(lotsev1.KubeconfigAdmin) && role != string(lotsev1.KubeconfigViewer):
					return fmt.Errorf("--role %q: give admin or viewer", role)
				}
				if expires < userkubeconfig.MinTTL || expires > userkubeconfig.MaxTTL {
					return fmt.Errorf("--expires %s: give a lifetime from %s to %s (e.g. 8h)", expires, userkubeconfig.MinTTL, userkubeconfig.MaxTTL)
				}
				c, err := flags.client()
				if err != nil {
					return err
				}
				data, err := requestKubeconfig(cmd, flags, c, args[0], lotsev1.KubeconfigRole(role), expires)
				if err != nil {
					return err
				}
				if file != "" {
					return fsutil.WriteFileAtomic(file, data, 0o600)
				}
				_, err = cmd.OutOrStdout().Write(data)
				return err
			}
			if !shortLived && (cmd.Flags().Changed("user") || cmd.Flags().Changed("group")) {
				return fmt.Errorf("--user and --group need --expires: they describe a short-lived kubeconfig (e.g. --expires 8h)")
			}
			req := userkubeconfig.Request{User: user, Groups: groups, TTL: expires}
			if shortLived {
				if err := req.Validate(); err != nil {
					return err
				}
			}
			c, err := flags.client()
			if err != nil {
				return err
			}
			secret := &corev1.Secret{}
			key := client.ObjectKey{Namespace: flags.namespace, Name: clustercontroller.KubeconfigSecretName(args[0])}
			if err := c.Get(cmd.Context(), key, secret); err != nil {
				if apierrors.IsNotFound(err) {
					return fmt.Errorf("no kubeconfig for cluster %s/%s yet: the cluster does not exist or is still being created (see `lotse cluster get %s`)", flags.namespace, args[0], args[0])
				}
				if apierrors.IsForbidden(err) {
					return fmt.Errorf("%v\n(the admin kubeconfig is not yours to read; ask for one in your own name: lotse cluster kubeconfig %s --expires 8h --role viewer)", err, args[0])
				}
				return explain(err)
			}
			if !clustercontroller.IsClusterKubeconfig(secret, args[0]) {
				return fmt.Errorf("the Secret %s/%s is not the kubeconfig Lotse wrote for cluster %s (it lacks Lotse's label): not using it; Lotse replaces it at the cluster's next reconcile", key.Namespace, key.Name, args[0])
			}
			data := secret.Data["kubeconfig"]
			if shortLived {
				if data, err = shortLivedKubeconfig(cmd, data, req); err != nil {
					return err
				}
			}
			if file != "" {
				// A new file of mode 0600, also where one existed with
				// a wider mode: it holds a private key.
				return fsutil.WriteFileAtomic(file, data, 0o600)
			}
			_, err = cmd.OutOrStdout().Write(data)
			return err
		},
	}
	cmd.Flags().StringVarP(&file, "output-file", "f", "", "write to this file (mode 0600) instead of stdout")
	cmd.Flags().DurationVar(&expires, "expires", 0, "a kubeconfig for a person that expires after this time (10m to 168h), instead of the admin kubeconfig")
	cmd.Flags().StringVar(&user, "user", defaultKubeconfigUser(), "with --expires: the user name the certificate carries")
	cmd.Flags().StringSliceVar(&groups, "group", []string{userkubeconfig.AdminGroup}, "with --expires: the groups the certificate carries (repeatable)")
	cmd.Flags().StringVar(&role, "role", "", "with --expires: ask for a kubeconfig in your own name with this role, admin or viewer (a KubeconfigRequest; no access to the admin kubeconfig needed)")
	return cmd
}

// requestKubeconfig asks the manager for a certificate in the caller's own
// name through a KubeconfigRequest; the key is made here and stays here.
func requestKubeconfig(cmd *cobra.Command, flags *clientFlags, c client.Client, cluster string, role lotsev1.KubeconfigRole, ttl time.Duration) ([]byte, error) {
	ctx := cmd.Context()
	review := &authenticationv1.SelfSubjectReview{}
	if err := c.Create(ctx, review); err != nil {
		return nil, fmt.Errorf("who am I on the management API: %w", explain(err))
	}
	user := review.Status.UserInfo.Username
	group := userkubeconfig.ViewerGroup
	if role == lotsev1.KubeconfigAdmin {
		group = userkubeconfig.AdminGroup
	}
	keyPEM, csrPEM, err := userkubeconfig.NewCSR(user, []string{group})
	if err != nil {
		return nil, err
	}
	kr := &lotsev1.KubeconfigRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: flags.namespace, GenerateName: cluster + "-"},
		Spec: lotsev1.KubeconfigRequestSpec{Cluster: cluster, User: user, Role: role,
			ExpirationSeconds: int32(ttl / time.Second), CertificateSigningRequest: string(csrPEM)},
	}
	if err := c.Create(ctx, kr); err != nil {
		return nil, explain(err)
	}
	var issued *lotsev1.KubeconfigRequest
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		cur := &lotsev1.KubeconfigRequest{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(kr), cur); err != nil {
			return false, nil
		}
		cond := meta.FindStatusCondition(cur.Status.Conditions, lotsev1.ConditionIssued)
		switch {
		case cond == nil:
			return false, nil
		case cond.Status == metav1.ConditionTrue:
			issued = cur
			return true, nil
		case cond.Reason == "Refused" || cond.Reason == "GaveUp":
			return false, fmt.Errorf("kubeconfig request %s/%s refused: %s", kr.Namespace, kr.Name, cond.Message)
		}
		return false, nil
	})
	if err != nil {
		if issued == nil && errors.Is(err, context.DeadlineExceeded) {
			cur := &lotsev1.KubeconfigRequest{}
			msg := "no answer"
			if c.Get(ctx, client.ObjectKeyFromObject(kr), cur) == nil {
				if cond := meta.FindStatusCondition(cur.Status.Conditions, lotsev1.ConditionIssued); cond != nil {
					msg = cond.Message
				}
			}
			return nil, fmt.Errorf("kubeconfig request %s/%s not answered within 90s: %s", kr.Namespace, kr.Name, msg)
		}
		return nil, err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "kubeconfig for %s (%s of cluster %s), valid until %s\n", user, role, cluster, issued.Status.ExpirationTimestamp.UTC().Format(time.RFC3339))
	return pki.Kubeconfig(cluster, issued.Status.Server, []byte(issued.Status.CertificateAuthority), []byte(issued.Status.Certificate), keyPEM, user), nil
}

// defaultKubeconfigUser names the person at this terminal.
func defaultKubeconfigUser() string {
	if u, err := osuser.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "lotse-user"
}

// shortLivedKubeconfig asks the cluster behind an admin kubeconfig for a
// certificate for req and returns a kubeconfig with it.
func shortLivedKubeconfig(cmd *cobra.Command, adminKubeconfig []byte, req userkubeconfig.Request) ([]byte, error) {
	admin, err := clientcmd.Load(adminKubeconfig)
	if err != nil {
		return nil, fmt.Errorf("the admin kubeconfig: %w", err)
	}
	// The Secret is writable by the project's admins: follow no file,
	// plugin or proxy it might name.
	cfg, err := untrustedkubeconfig.ParseUntrusted(adminKubeconfig)
	if err != nil {
		return nil, fmt.Errorf("the admin kubeconfig: %w", err)
	}
	adminCtx := admin.Contexts[admin.CurrentContext]
	if adminCtx == nil || admin.Clusters[adminCtx.Cluster] == nil {
		return nil, fmt.Errorf("the admin kubeconfig has no current context and cluster")
	}
	cluster := admin.Clusters[adminCtx.Cluster]
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	issued, err := userkubeconfig.Issue(cmd.Context(), cs, req, time.Minute)
	if err != nil {
		return nil, err
	}
	if issued.BoundAdminGroup {
		fmt.Fprintf(cmd.ErrOrStderr(), "bound group %s to cluster-admin (ClusterRoleBinding %s)\n", userkubeconfig.AdminGroup, userkubeconfig.AdminBinding)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "kubeconfig for %s (groups %s), valid until %s\n", req.User, strings.Join(req.Groups, ", "), issued.NotAfter.UTC().Format(time.RFC3339))
	return pki.Kubeconfig(adminCtx.Cluster, cluster.Server, cluster.CertificateAuthorityData, issued.Cert, issued.Key, req.User), nil
}

func newClusterDeleteCommand(flags *clientFlags) *cobra.Command {
	return newDeleteCommand(flags, "cluster", "get", "Delete a cluster: its control plane, data and kubeconfig",
		func(namespace, name string) client.Object {
			return &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
		})
}

// newDeleteCommand is `lotse WHAT delete NAME [--wait]` for a namespaced
// kind made by object; `lotse WHAT SHOW NAME` shows one.
func newDeleteCommand(flags *clientFlags, what, show, short string, object func(namespace, name string) client.Object) *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: short,
		Args:  exactlyOneName("lotse " + what + " delete NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return deleteObject(cmd, flags, object(flags.namespace, args[0]), what, show, wait, timeout)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the "+what+" is gone")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long --wait waits")
	return cmd
}

// deleteObject deletes obj (a what: "cluster", "fleet") and with wait
// waits until it is gone; its messages point to `lotse WHAT list` and
// `lotse WHAT SHOW NAME`.
func deleteObject(cmd *cobra.Command, flags *clientFlags, obj client.Object, what, show string, wait bool, timeout time.Duration) error {
	c, err := flags.client()
	if err != nil {
		return err
	}
	name := obj.GetNamespace() + "/" + obj.GetName()
	if err := c.Delete(cmd.Context(), obj); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("%s %s not found; see `lotse %s list`", what, name, what)
		}
		return explain(err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s %s is being deleted\n", what, name)
	if !wait {
		return nil
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	start := time.Now()
	for {
		err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj.DeepCopyObject().(client.Object))
		if apierrors.IsNotFound(err) {
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s deleted after %s\n", what, name, time.Since(start).Round(10*time.Millisecond))
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s %s still exists after %s; see `lotse %s %s %s`", what, name, timeout, what, show, obj.GetName())
		case <-time.After(250 * time.Millisecond):
		}
	}
}
