package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	fleetcontroller "github.com/lotse/lotse/internal/controller/fleet"
	"github.com/lotse/lotse/internal/federation/agent"
	"github.com/lotse/lotse/internal/images"
)

// Where `lotse fleet register` puts the agent in a member.
const (
	agentNamespace      = "lotse-fleet-agent"
	agentName           = "lotse-fleet-agent"
	agentBootstrapMount = "/etc/lotse-fleet"
	agentIdentitySecret = "fleet-identity"
)

func newFleetRegisterCommand(flags *clientFlags) *cobra.Command {
	var kubeconfig, agentImage, bootstrapOut, fleetEndpoint, region, zone, provider string
	var labels map[string]string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "register FLEET NAME",
		Short: "Make a cluster the fleet cannot reach a pull-mode member: an agent in it applies the fleet's work",
		Long: "Creates the member NAME (spec.syncMode: Pull) and a bootstrap token for its agent. With --kubeconfig-file\n" +
			"and --agent-image it deploys the agent into the member (namespace " + agentNamespace + "); the agent asks the\n" +
			"fleet for its own certificate with the token and from then on applies the Works of its member and renews\n" +
			"its lease. --bootstrap-kubeconfig FILE writes the token's kubeconfig, for an agent started by hand with\n" +
			"`lotse fleet agent`. Registering a pull-mode member again hands its agent the fleet's current token: an\n" +
			"agent whose certificate expired while it was stopped joins again with it.",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return fmt.Errorf("usage: lotse fleet register FLEET NAME (--kubeconfig-file FILE --agent-image IMAGE | --bootstrap-kubeconfig FILE)")
			}
			if (kubeconfig == "") != (agentImage == "") {
				return fmt.Errorf("--kubeconfig-file and --agent-image go together: the agent is deployed into the member with the first and runs the second (an image with lotse at %s, such as `lotse image manager`'s)", images.ManagerBinary)
			}
			if kubeconfig == "" && bootstrapOut == "" {
				return fmt.Errorf("give --kubeconfig-file and --agent-image to deploy the agent, or --bootstrap-kubeconfig FILE to run it yourself")
			}
			if fleetEndpoint != "" {
				if _, err := withFleetEndpoint(nil, fleetEndpoint); err != nil {
					return err
				}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			fleet, name := args[0], args[1]
			var member *rest.Config
			if kubeconfig != "" {
				var err error
				if member, err = clientcmd.BuildConfigFromFlags("", kubeconfig); err != nil {
					return fmt.Errorf("--kubeconfig-file: %w", err)
				}
				member.Timeout = 30 * time.Second
			}
			c, err := flags.client()
			if err != nil {
				return err
			}
			if _, err := getFleet(cmd.Context(), c, flags.namespace, fleet); err != nil {
				return err
			}
			m := &lotsev1.FleetMember{ObjectMeta: metav1.ObjectMeta{Namespace: flags.namespace, Name: name, Labels: labels},
				Spec: lotsev1.FleetMemberSpec{Fleet: fleet, SyncMode: lotsev1.SyncPull, Region: region, Zone: zone, Provider: provider}}
			if fleetEndpoint != "" {
				m.Annotations = map[string]string{lotsev1.FleetEndpointAnnotation: fleetEndpoint}
			}
			again := false
			if err := c.Create(cmd.Context(), m); apierrors.IsAlreadyExists(err) {
				// Registering a pull-mode member again hands its agent the
				// fleet's current bootstrap token: how an agent whose
				// certificate expired (stopped too long) joins again.
				if fleetEndpoint, err = registerAgain(cmd, c, flags.namespace, fleet, name, fleetEndpoint); err != nil {
					return err
				}
				again = true
			} else if err != nil {
				return explain(err)
			}
			bootstrap, err := waitBootstrapKubeconfig(cmd.Context(), c, flags.namespace, name, timeout)
			if err != nil {
				return err
			}
			if fleetEndpoint != "" {
				if bootstrap, err = withFleetEndpoint(bootstrap, fleetEndpoint); err != nil {
					return err
				}
			}
			if bootstrapOut != "" {
				if err := os.WriteFile(bootstrapOut, bootstrap, 0o600); err != nil {
					return fmt.Errorf("--bootstrap-kubeconfig: %w", err)
				}
			}
			if member != nil {
				if err := deployAgent(cmd.Context(), member, name, agentImage, bootstrap); err != nil {
					return fmt.Errorf("deploying the agent into the member (the member %s stays in fleet %s; run this register again to deploy it): %w", name, fleet, err)
				}
				if again {
					fmt.Fprintf(cmd.OutOrStdout(), "%s registered again with fleet %s: its agent in namespace %s of the member has the current bootstrap token\n", name, fleet, agentNamespace)
					return nil
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s registered with fleet %s: its agent runs in namespace %s of the member\n", name, fleet, agentNamespace)
				return nil
			}
			verb := "registered"
			if again {
				verb = "registered again"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s with fleet %s: start its agent with\n  lotse fleet agent --member %s --fleet-kubeconfig %s --kubeconfig MEMBER-KUBECONFIG\n",
				name, verb, fleet, name, bootstrapOut)
			return nil
		},
	}
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig-file", "", "kubeconfig of the member, used once to deploy the agent (the fleet keeps no credentials of the member)")
	cmd.Flags().StringVar(&agentImage, "agent-image", "", "image the agent runs: lotse at "+images.ManagerBinary+" (the manager's image, from lotse image manager, has it)")
	cmd.Flags().StringVar(&bootstrapOut, "bootstrap-kubeconfig", "", "write the agent's bootstrap kubeconfig (a token valid for 24 h) to this file")
	cmd.Flags().StringVar(&fleetEndpoint, "fleet-endpoint", "", "https://HOST:PORT where the agent reaches the fleet's API, when that is not the fleet's own endpoint (a proxy, a NAT); the fleet's certificate is still checked against the fleet's own address")
	cmd.Flags().StringVar(&region, "region", "", "the member's region for placement")
	cmd.Flags().StringVar(&zone, "zone", "", "the member's zone for placement")
	cmd.Flags().StringVar(&provider, "provider", "", "the member's provider for placement")
	cmd.Flags().StringToStringVar(&labels, "labels", nil, "labels policies select the member by (key=value,...)")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait for the fleet to issue the bootstrap token")
	return cmd
}

// registerAgain checks that an existing member may be registered again
// (a pull-mode member of this fleet, not leaving, and no flag that would
// change it) and returns the fleet endpoint to use: the one given, which
// it records, or the one recorded at the first registration.
func registerAgain(cmd *cobra.Command, c client.Client, namespace, fleet, name, fleetEndpoint string) (string, error) {
	ctx := cmd.Context()
	cur := &lotsev1.FleetMember{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, cur); err != nil {
		return "", err
	}
	switch {
	case cur.Spec.SyncMode != lotsev1.SyncPull || cur.Spec.Fleet != fleet:
		return "", fmt.Errorf("a member named %s exists already in namespace %s (of fleet %s, not a pull-mode member of %s); choose another NAME", name, namespace, cur.Spec.Fleet, fleet)
	case !cur.DeletionTimestamp.IsZero():
		return "", fmt.Errorf("member %s is leaving fleet %s; register it once it is gone", name, fleet)
	}
	for _, f := range []string{"labels", "region", "zone", "provider"} {
		if cmd.Flags().Changed(f) {
			return "", fmt.Errorf("--%s: registering member %s again only hands its agent a new token; change the FleetMember itself (kubectl edit fleetmember %s)", f, name, name)
		}
	}
	if fleetEndpoint == "" {
		return cur.Annotations[lotsev1.FleetEndpointAnnotation], nil
	}
	if cur.Annotations[lotsev1.FleetEndpointAnnotation] != fleetEndpoint {
		patch := client.MergeFrom(cur.DeepCopy())
		if cur.Annotations == nil {
			cur.Annotations = map[string]string{}
		}
		cur.Annotations[lotsev1.FleetEndpointAnnotation] = fleetEndpoint
		if err := c.Patch(ctx, cur, patch); err != nil {
			return "", err
		}
	}
	return fleetEndpoint, nil
}

// withFleetEndpoint points a bootstrap kubeconfig at endpoint, where the
// agent reaches the fleet's API, and has it check the fleet's certificate
// against the address it was issued for (tls-server-name). With a nil
// kubeconfig it only checks endpoint.
func withFleetEndpoint(kubeconfig []byte, endpoint string) ([]byte, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		u = &url.URL{}
	}
	// An IPv6 address needs its brackets: https://fd00::1 would read as
	// host "fd00:" and port 1.
	unbracketed := strings.Count(u.Host, ":") > 1 && !strings.HasPrefix(u.Host, "[")
	if err != nil || u.Scheme != "https" || u.Hostname() == "" || unbracketed || u.User != nil || u.Fragment != "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, fmt.Errorf("--fleet-endpoint %q: give https://HOST:PORT (an IPv6 address in brackets), where the agent reaches the fleet's API", endpoint)
	}
	if kubeconfig == nil {
		return nil, nil
	}
	cfg, err := clientcmd.Load(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("the bootstrap kubeconfig: %w", err)
	}
	for _, cluster := range cfg.Clusters {
		own, err := url.Parse(cluster.Server)
		if err != nil {
			return nil, fmt.Errorf("the bootstrap kubeconfig's server %q: %w", cluster.Server, err)
		}
		if cluster.TLSServerName == "" {
			cluster.TLSServerName = own.Hostname()
		}
		cluster.Server = strings.TrimSuffix(endpoint, "/")
	}
	return clientcmd.Write(*cfg)
}

// waitBootstrapKubeconfig waits for the manager to issue a pull-mode
// member's bootstrap kubeconfig.
func waitBootstrapKubeconfig(ctx context.Context, c client.Client, namespace, member string, timeout time.Duration) ([]byte, error) {
	var kubeconfig []byte
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		s := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: fleetcontroller.AgentSecretName(member)}, s); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		kubeconfig = s.Data["kubeconfig"]
		// A token about to expire is not handed out: the manager issues
		// the next once the fleet has removed it.
		if expires, err := time.Parse(time.RFC3339, string(s.Data["expiration"])); err == nil && time.Until(expires) < time.Minute {
			return false, nil
		}
		return len(kubeconfig) > 0, nil
	})
	if err != nil {
		return nil, fmt.Errorf("the fleet issued no bootstrap token for %s within %s (is its fleet Ready? see `kubectl describe fleetmember %s`)", member, timeout, member)
	}
	return kubeconfig, nil
}

// deployAgent puts the agent into the member: its namespace, a service
// account with cluster-admin (it applies whatever kinds the fleet sends,
// as Karmada's agent does), the bootstrap kubeconfig and a Deployment.
func deployAgent(ctx context.Context, member *rest.Config, name, image string, bootstrap []byte) error {
	cs, err := kubernetes.NewForConfig(member)
	if err != nil {
		return err
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: agentNamespace}}, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return err
	}
	if _, err := cs.CoreV1().ServiceAccounts(agentNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: agentName}}, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return err
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: agentName},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: agentNamespace, Name: agentName}}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return err
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: agentNamespace, Name: "fleet-bootstrap"}, Data: map[string][]byte{"kubeconfig": bootstrap}}
	if _, err := cs.CoreV1().Secrets(agentNamespace).Create(ctx, secret, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		if _, err := cs.CoreV1().Secrets(agentNamespace).Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	labels := map[string]string{"app.kubernetes.io/name": agentName}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: agentNamespace, Name: agentName, Labels: labels},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
			// The agent reads its bootstrap kubeconfig when it starts: a new
			// one (registered again) rolls it.
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels,
				Annotations: map[string]string{bootstrapHashAnnotation: bootstrapHash(bootstrap)}}, Spec: corev1.PodSpec{
				ServiceAccountName: agentName,
				Containers: []corev1.Container{{Name: "agent", Image: image,
					Command: []string{images.ManagerBinary, "fleet", "agent", "--member=" + name,
						"--fleet-kubeconfig=" + agentBootstrapMount + "/kubeconfig", "--identity-secret=" + agentNamespace + "/" + agentIdentitySecret},
					VolumeMounts: []corev1.VolumeMount{{Name: "bootstrap", MountPath: agentBootstrapMount, ReadOnly: true}},
					SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532),
						ReadOnlyRootFilesystem: ptr.To(true), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
				}},
				Volumes: []corev1.Volume{{Name: "bootstrap", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "fleet-bootstrap"}}}},
			}}}}
	if _, err := cs.AppsV1().Deployments(agentNamespace).Create(ctx, d, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		_, err = cs.AppsV1().Deployments(agentNamespace).Update(ctx, d, metav1.UpdateOptions{})
		return err
	} else if err != nil {
		return err
	}
	return nil
}

// bootstrapHashAnnotation on the agent's pods names the bootstrap
// kubeconfig they started with.
const bootstrapHashAnnotation = "lotse.dev/bootstrap-kubeconfig-sha256"

func bootstrapHash(kubeconfig []byte) string {
	sum := sha256.Sum256(kubeconfig)
	return hex.EncodeToString(sum[:8])
}

// ignoreExists: a Create of what is there already is done.
func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func newFleetAgentCommand() *cobra.Command {
	var memberName, fleetKubeconfig, kubeconfig, identity string
	var leaseDuration time.Duration
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a pull-mode member's agent: apply the fleet's Works in the member (what `lotse fleet register` deploys)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if memberName == "" || fleetKubeconfig == "" {
				return fmt.Errorf("--member and --fleet-kubeconfig are required")
			}
			ns, secretName, ok := strings.Cut(identity, "/")
			if !ok || ns == "" || secretName == "" {
				return fmt.Errorf("--identity-secret %q: give NAMESPACE/NAME of a Secret in the member", identity)
			}
			setupLogging("")
			ctx := ctrllog.IntoContext(cmd.Context(), ctrllog.Log.WithName("fleet-agent").WithValues("member", memberName))
			bootstrap, err := clientcmd.BuildConfigFromFlags("", fleetKubeconfig)
			if err != nil {
				return fmt.Errorf("--fleet-kubeconfig: %w", err)
			}
			var local *rest.Config
			if kubeconfig != "" {
				local, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
			} else {
				local, err = rest.InClusterConfig()
			}
			if err != nil {
				return fmt.Errorf("the member's API (--kubeconfig, or the pod's service account): %w", err)
			}
			cs, err := kubernetes.NewForConfig(local)
			if err != nil {
				return err
			}
			if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) && !apierrors.IsForbidden(err) {
				return err
			}
			store := agent.IdentitySecret{Namespace: ns, Name: secretName}
			for {
				fleetCfg, err := agent.FleetIdentity(ctx, memberName, bootstrap, cs, store)
				if err != nil {
					return err
				}
				a := &agent.Agent{Member: memberName, Fleet: fleetCfg, Local: local, LeaseDuration: leaseDuration, RenewAt: agent.RenewAt(fleetCfg, store)}
				err = a.Run(ctx)
				switch {
				case cmd.Context().Err() != nil:
					return nil
				case errors.Is(err, agent.ErrRenew):
					continue // with the identity it renews now
				}
				return err
			}
		},
	}
	cmd.Flags().StringVar(&memberName, "member", "", "the member's name in the fleet")
	cmd.Flags().StringVar(&fleetKubeconfig, "fleet-kubeconfig", "", "kubeconfig that reaches the fleet's API, with the bootstrap token lotse fleet register issued (used once, for the agent's own certificate)")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of the member (default: the pod's service account)")
	cmd.Flags().StringVar(&identity, "identity-secret", agentNamespace+"/"+agentIdentitySecret, "Secret in the member (NAMESPACE/NAME) where the agent keeps its certificate for the fleet")
	cmd.Flags().DurationVar(&leaseDuration, "lease-duration", agent.DefaultLeaseDuration, "how long the fleet counts the member as present after a renewal (renewed at a quarter of it)")
	return cmd
}
