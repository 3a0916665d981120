package cli

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/lotse/lotse/internal/care"
	"github.com/lotse/lotse/internal/controlplane/process"
	"github.com/lotse/lotse/internal/loadbalancer"
	"github.com/lotse/lotse/internal/managementplane"
	"github.com/lotse/lotse/internal/manager"
	"github.com/lotse/lotse/internal/releases"
	"github.com/lotse/lotse/internal/supervisor"
)

func newUpCommand() *cobra.Command {
	opts := managementplane.Options{}
	var registry registryFlags
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the embedded management plane and manager in the foreground",
		Long: "Starts the management API (etcd + kube-apiserver + controller-manager), installs Lotse's CRDs\n" +
			"and runs the manager. Ctrl-C stops the manager and every control plane it runs; their data\n" +
			"stays in the state directory and the next `lotse up` brings them back.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if opts.ImageRegistry, opts.ImagePullCredentials, err = registry.options(""); err != nil {
				return err
			}
			setupLogging(filepath.Join(opts.StateDir, "logs", "manager.log"))
			opts.Out = cmd.ErrOrStderr()
			return managementplane.Up(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.StateDir, "state-dir", managementplane.DefaultStateDir(), "where control planes keep data, PKI and logs ($LOTSE_STATE_DIR)")
	cmd.Flags().StringVar(&opts.CacheDir, "cache-dir", releases.DefaultCacheDir(), "where upstream binaries are built and kept ($LOTSE_CACHE_DIR)")
	cmd.Flags().StringSliceVar(&opts.DNSUpstreams, "dns-upstream", nil, "resolver the clusters' CoreDNS forwards other names to (repeatable; default: none, no query leaves a cluster)")
	cmd.Flags().StringVar(&opts.LBAddressPool, "lb-address-pool", manager.DefaultLBAddressPool, "range the public addresses of LoadBalancer Services come from (on the host's loopback)")
	cmd.Flags().StringVar(&opts.BackupDir, "backup-dir", "", "where snapshots of clusters without a spec.backup destination go (default STATE/backups)")
	cmd.Flags().StringVar(&opts.MetricsAddr, "metrics-bind-address", "0", "address of the manager's Prometheus metrics, e.g. 127.0.0.1:9464 (0 disables)")
	cmd.Flags().StringVar(&opts.FleetDNSAddr, "fleet-dns-address", "", "address of the fleets' authoritative DNS server, UDP and TCP (default: a free port on 127.0.0.1; 0 disables)")
	cmd.Flags().IntVar(&opts.APIServerGOGC, "apiserver-gogc", 0, apiServerGOGCHelp)
	cmd.Flags().StringVar(&opts.DashboardAddr, "dashboard-address", "", "serve the web dashboard on this loopback address, e.g. 127.0.0.1:8080 (default: none; `lotse dashboard` serves one too)")
	cmd.Flags().StringSliceVar(&opts.AlertWebhooks, "alert-webhook", nil, "URL that receives Alertmanager webhook payloads of Lotse's alerts (repeatable)")
	cmd.Flags().DurationVar(&opts.AlertAfter, "alert-after", care.DefaultAlertAfter, "how long a health condition stays False before it alerts")
	cmd.Flags().DurationVar(&opts.RestartUnhealthyAfter, "restart-unhealthy-after", care.DefaultRestartAfter, "how long a control-plane component may fail its health check (with what it depends on healthy) before it is restarted; negative: never")
	registry.add(cmd.Flags())
	return cmd
}

const apiServerGOGCHelp = "GOGC of the clusters' API servers: 50 trades about 0.6 s of creation for about 38 MiB less memory each (0: Go's default, 100)"

func newDownCommand() *cobra.Command {
	var stateDir string
	var purge bool
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop every process a killed `lotse up` left running (data is kept)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := os.Stat(stateDir); os.IsNotExist(err) {
				fmt.Fprintf(cmd.OutOrStdout(), "nothing to stop: %s does not exist\n", stateDir)
				return nil
			}
			if purge {
				if err := managementplane.Purge(cmd.Context(), stateDir); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "purged %s: processes, machines and data are gone\n", stateDir)
				return nil
			}
			n, err := managementplane.Down(stateDir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "stopped %d processes\n", n)
			return nil
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", managementplane.DefaultStateDir(), "state directory of the lotse to stop ($LOTSE_STATE_DIR)")
	cmd.Flags().BoolVar(&purge, "purge", false, "also remove the machines' namespaces, mounts, cgroups and firewall rules, and the state directory: all data is lost")
	return cmd
}

func newManagerCommand() *cobra.Command {
	var kubeconfig, stateDir, cacheDir, metricsAddr, healthAddr, lbPool, backupDir, fleetDNSAddr, webhookAddr, webhookAdvertise, dashboardAddr string
	var controlPlaneImage, leaderElectionNamespace, webhookService, webhookOwner string
	var registry registryFlags
	var seedsOnly bool
	var apiServerGOGC int
	var alertWebhooks []string
	var alertAfter, restartAfter time.Duration
	var leaderElect bool
	var dnsUpstreams []string
	cmd := &cobra.Command{
		Use:   "manager",
		Short: "Run Lotse's controllers against an existing Kubernetes API",
		Long: "Runs the manager against any Kubernetes API (how a provider runs Lotse at scale). Control planes\n" +
			"are run by the process backend on this host. Stopping the manager leaves them running; the next\n" +
			"manager with the same state directory adopts them.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			imageRegistry, pullCredentials, err := registry.options(controlPlaneImage)
			if err != nil {
				return err
			}
			cfg, err := managementConfig(kubeconfig)
			if err != nil {
				return err
			}
			if controlPlaneImage != "" && !seedsOnly {
				return fmt.Errorf("--control-plane-image needs --seeds-only: only seed-hosted control planes run images")
			}
			// As lotse up's manager: client-go's default (5 a second)
			// would make a few hundred clusters queue for the client.
			cfg.QPS, cfg.Burst = 50, 100
			if err := os.MkdirAll(stateDir, 0o700); err != nil {
				return err
			}
			setupLogging("")
			abs, _ := filepath.Abs(stateDir)
			sup := supervisor.New(supervisor.OwnerID(abs), supervisor.Options{Log: cmd.ErrOrStderr()})
			if apiServerGOGC < 0 {
				return fmt.Errorf("--apiserver-gogc %d: give a positive percentage, or 0 for Go's default", apiServerGOGC)
			}
			backend := process.New(abs, sup)
			backend.APIServerGOGC = apiServerGOGC
			err = manager.Run(cmd.Context(), cfg, manager.Options{
				Releases:                releases.NewStore(cacheDir),
				Backend:                 backend,
				StateDir:                abs,
				LotseBinary:             backend.LotseBinary,
				Supervisor:              sup,
				LeaderElection:          leaderElect,
				LeaderElectionNamespace: leaderElectionNamespace,
				MetricsAddr:             metricsAddr,
				FleetDNSAddr:            fleetDNSAddr,
				HealthAddr:              healthAddr,
				BuildLog:                cmd.ErrOrStderr(),
				DNSUpstreams:            dnsUpstreams,
				LBAddressPool:           lbPool,
				BackupDir:               backupDir,
				AlertWebhooks:           alertWebhooks,
				AlertAfter:              alertAfter,
				RestartUnhealthyAfter:   restartAfter,
				WebhookAddr:             webhookAddr,
				WebhookAdvertiseAddress: webhookAdvertise,
				WebhookService:          webhookService,
				WebhookOwner:            webhookOwner,
				DashboardAddr:           dashboardAddr,
				SeedsOnly:               seedsOnly,
				ControlPlaneImage:       controlPlaneImage,
				ImageRegistry:           imageRegistry,
				ImagePullCredentials:    pullCredentials,
			})
			if cmd.Context().Err() != nil {
				return nil
			}
			return err
		},
	}
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of the management API (default: the cluster this manager runs in, as a pod)")
	cmd.Flags().BoolVar(&seedsOnly, "seeds-only", false, "run every control plane on a seed, none as processes on this host (a manager installed in a cluster)")
	cmd.Flags().StringVar(&controlPlaneImage, "control-plane-image", "", "image that holds the releases' binaries where --cache-dir has them (`lotse image manager`); seed-hosted control planes run it, and no images are loaded into seeds")
	registry.add(cmd.Flags())
	cmd.Flags().StringVar(&stateDir, "state-dir", managementplane.DefaultStateDir(), "where control planes keep data, PKI and logs")
	cmd.Flags().StringVar(&cacheDir, "cache-dir", releases.DefaultCacheDir(), "where upstream binaries are built and kept")
	cmd.Flags().BoolVar(&leaderElect, "leader-elect", false, "elect a leader among several managers")
	cmd.Flags().StringVar(&leaderElectionNamespace, "leader-election-namespace", "lotse-system", "namespace of the leader election's Lease")
	cmd.Flags().StringSliceVar(&dnsUpstreams, "dns-upstream", nil, "resolver the clusters' CoreDNS forwards other names to (repeatable; default: none)")
	cmd.Flags().StringVar(&lbPool, "lb-address-pool", manager.DefaultLBAddressPool, "range the public addresses of LoadBalancer Services come from (on the host's loopback)")
	cmd.Flags().StringVar(&backupDir, "backup-dir", "", "where snapshots of clusters without a spec.backup destination go (default STATE/backups)")
	cmd.Flags().StringSliceVar(&alertWebhooks, "alert-webhook", nil, "URL that receives Alertmanager webhook payloads of Lotse's alerts (repeatable)")
	cmd.Flags().DurationVar(&alertAfter, "alert-after", care.DefaultAlertAfter, "how long a health condition stays False before it alerts")
	cmd.Flags().DurationVar(&restartAfter, "restart-unhealthy-after", care.DefaultRestartAfter, "how long a control-plane component may fail its health check (with what it depends on healthy) before it is restarted; negative: never")
	cmd.Flags().StringVar(&metricsAddr, "metrics-bind-address", "0", "address of the metrics endpoint (0 disables)")
	cmd.Flags().IntVar(&apiServerGOGC, "apiserver-gogc", 0, apiServerGOGCHelp)
	cmd.Flags().StringVar(&fleetDNSAddr, "fleet-dns-address", "", "address of the fleets' authoritative DNS server, UDP and TCP (default: a free port on 127.0.0.1; 0 disables)")
	cmd.Flags().StringVar(&healthAddr, "health-probe-bind-address", "0", "address of /healthz and /readyz (0 disables)")
	cmd.Flags().StringVar(&webhookAddr, "webhook-address", "", "address of the admission webhook that enforces project quotas (default: a free port on 127.0.0.1; 0 disables, and project quotas are not enforced)")
	cmd.Flags().StringVar(&dashboardAddr, "dashboard-address", "", "serve the web dashboard on this loopback address, e.g. 127.0.0.1:8080 (default: none)")
	cmd.Flags().StringVar(&webhookAdvertise, "webhook-advertise-address", "", "host or IP the management API reaches the admission webhook at (default: the host of --webhook-address)")
	cmd.Flags().StringVar(&webhookOwner, "webhook-owner-clusterrole", "", "ClusterRole that owns the admission webhook's configuration: deleting it (helm uninstall) removes the configuration")
	cmd.Flags().StringVar(&webhookService, "webhook-service", "", "NAMESPACE/NAME of the Service (port 443) the management API reaches the admission webhook through, for managers in a cluster; they share its CA in the Secret NAME-ca")
	return cmd
}

func newLoadBalancerCommand() *cobra.Command {
	cfg := loadbalancer.Config{}
	cmd := &cobra.Command{
		Use:    "loadbalancer",
		Short:  "TCP load balancer in front of the API servers of an HA control plane (run by the supervisor)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Log = log.New(cmd.ErrOrStderr(), "loadbalancer: ", log.LstdFlags)
			lb, err := loadbalancer.New(cfg)
			if err != nil {
				return err
			}
			cfg.Log.Printf("serving %s", cfg)
			return lb.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&cfg.Listen, "listen", "", "address to listen on, e.g. 127.0.0.1:6443")
	cmd.Flags().StringSliceVar(&cfg.Backends, "backend", nil, "backend address (repeatable)")
	cmd.Flags().StringVar(&cfg.HealthPath, "health-path", "", "HTTPS path checked on each backend, e.g. /readyz")
	cmd.Flags().StringVar(&cfg.CAFile, "ca-file", "", "CA that signed the backends' certificates")
	cmd.Flags().StringVar(&cfg.ServerName, "server-name", "", "name the backends' certificates are verified for during health checks (default: each backend's address)")
	cmd.Flags().DurationVar(&cfg.Interval, "interval", 0, "health check interval (default 1s)")
	return cmd
}

// managementConfig is the client configuration of the management API: the
// kubeconfig given, or the cluster's own when the manager runs in a pod.
func managementConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig is required outside a pod: the management API to run against (%v)", err)
	}
	return cfg, nil
}
