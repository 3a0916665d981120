// Package manager runs Lotse's controllers (controller-runtime) against a
// management API: the embedded one of `lotse up`, or any Kubernetes cluster
// (`lotse manager --kubeconfig ...`).
package manager

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/addons/keeper"
	"github.com/lotse/lotse/internal/backup"
	"github.com/lotse/lotse/internal/care"
	"github.com/lotse/lotse/internal/cloudapi"
	"github.com/lotse/lotse/internal/cloudcontroller"
	cloudlocal "github.com/lotse/lotse/internal/cloudprovider/local"
	"github.com/lotse/lotse/internal/clusterref"
	backupcontroller "github.com/lotse/lotse/internal/controller/backup"
	clustercontroller "github.com/lotse/lotse/internal/controller/cluster"
	fleetcontroller "github.com/lotse/lotse/internal/controller/fleet"
	hibernationcontroller "github.com/lotse/lotse/internal/controller/hibernation"
	kubeconfigrequestcontroller "github.com/lotse/lotse/internal/controller/kubeconfigrequest"
	machinecontroller "github.com/lotse/lotse/internal/controller/machine"
	maintenancecontroller "github.com/lotse/lotse/internal/controller/maintenance"
	projectcontroller "github.com/lotse/lotse/internal/controller/project"
	seedcontroller "github.com/lotse/lotse/internal/controller/seed"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/controlplane/process"
	"github.com/lotse/lotse/internal/dashboard"
	fleetdns "github.com/lotse/lotse/internal/federation/dns"
	"github.com/lotse/lotse/internal/hibernation"
	"github.com/lotse/lotse/internal/images"
	"github.com/lotse/lotse/internal/machine"
	"github.com/lotse/lotse/internal/machine/local"
	"github.com/lotse/lotse/internal/metrics"
	"github.com/lotse/lotse/internal/quota"
	"github.com/lotse/lotse/internal/releases"
	"github.com/lotse/lotse/internal/supervisor"
	"github.com/lotse/lotse/internal/tenant"
)

// Scheme knows Kubernetes' built-in types, CRDs and Lotse's types.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = apiextensionsv1.AddToScheme(s)
	_ = lotsev1.AddToScheme(s)
	return s
}

// Options configure the manager.
type Options struct {
	Releases *releases.Store
	// Backend hosts the control planes (the process backend, or a fake in
	// tests that measure the manager alone).
	Backend controlplane.Backend
	// EndpointTask names the Backend's task after which a cluster's API
	// answers (default: the process backend's).
	EndpointTask func(controlplane.Spec) string
	// Provider makes the machines of worker pools (default: local
	// machines under StateDir, supervised by Supervisor).
	Provider machine.Provider
	// Tenants gives clients of the tenant clusters (default: real
	// clients, one cached per cluster).
	Tenants tenant.Access
	// StateDir holds what runs on this host: machines, load balancers,
	// backups by default.
	StateDir string
	// LotseBinary is the lotse executable the load balancers run (default:
	// this process's).
	LotseBinary string
	Supervisor  *supervisor.Supervisor
	// LeaderElection lets several managers run against one management API.
	LeaderElection bool
	// LeaderElectionNamespace holds the lease (default lotse-system).
	LeaderElectionNamespace string
	// MetricsAddr serves Prometheus metrics ("0" disables).
	MetricsAddr string
	// FleetDNSAddr is where the fleets' DNS server listens, UDP and TCP
	// ("" picks a port on 127.0.0.1; "0" disables).
	FleetDNSAddr string
	// HealthAddr serves /healthz and /readyz ("0" disables).
	HealthAddr string
	// BuildLog receives output of on-demand release builds.
	BuildLog io.Writer
	// DNSUpstreams are resolvers the clusters' CoreDNS forwards to (empty:
	// none, nothing leaves the cluster).
	DNSUpstreams []string
	// LBAddressPool is where public addresses of LoadBalancer Services
	// come from (default DefaultLBAddressPool).
	LBAddressPool string
	// AlertWebhooks receive Alertmanager webhook payloads of Lotse's
	// alerts (none: alerts show only as events and metrics).
	AlertWebhooks []string
	// AlertAfter is how long a health condition stays False before it
	// alerts (default 5 min).
	AlertAfter time.Duration
	// RestartUnhealthyAfter is how long a control-plane component may stay
	// unhealthy, with what it depends on healthy, before the care
	// controller restarts it (default 3 min; negative: never).
	RestartUnhealthyAfter time.Duration
	// BackupDir keeps the snapshots of clusters whose spec.backup names
	// no destination (default: backups/ in the state directory).
	BackupDir string
	// WebhookAddr is where the admission webhook (project quotas) listens
	// ("" picks a port on 127.0.0.1; "0" disables: project quotas are then
	// not enforced).
	WebhookAddr string
	// WebhookAdvertiseAddress is the host or IP the management API reaches
	// the webhook at (default: WebhookAddr's host).
	WebhookAdvertiseAddress string
	// WebhookService is the Service (NAMESPACE/NAME, port 443) the
	// management API reaches the webhook through, instead of an address:
	// a manager in a cluster, whose replicas all serve it with a CA they
	// share in the Secret NAME-ca.
	WebhookService string
	// WebhookOwner names a ClusterRole that owns the webhook
	// configuration: deleting it (helm uninstall) removes the
	// configuration too.
	WebhookOwner string
	// DashboardAddr serves the web dashboard on this loopback host:port
	// ("": no dashboard; `lotse dashboard` serves one too).
	DashboardAddr string
	// SeedsOnly runs every control plane on a seed: a manager installed in
	// a cluster has no host of its own for control-plane processes.
	SeedsOnly bool
	// ControlPlaneImage is the image that holds every release's binaries
	// at the paths under Releases.Dir (the manager's own image, when it
	// runs in a cluster): seed-hosted control planes run it, and no image
	// is built or loaded into seeds.
	ControlPlaneImage string
	// ImageRegistry, if set, is the repository the seed-hosted control
	// planes' images are pushed to and every seed's nodes pull from: a
	// seed need not be a Lotse cluster of this host then.
	ImageRegistry *images.Repository
	// ImagePullCredentials, if set, is a Docker config file's content the
	// seed-hosted control planes' pods pull their images with.
	ImagePullCredentials []byte
	// Started, if set, is closed once the controllers run.
	Started chan<- struct{}
}

// DefaultLBAddressPool is the default range of public LoadBalancer
// addresses, put on the host's loopback.
const DefaultLBAddressPool = "10.254.254.0/24"

// lbPool parses and checks the LoadBalancer address pool: IPv4, /16 to
// /30, and not overlapping a network of this host.
func lbPool(s string) (netip.Prefix, error) {
	if s == "" {
		s = DefaultLBAddressPool
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() || p.Bits() < 16 || p.Bits() > 30 {
		return netip.Prefix{}, fmt.Errorf("--lb-address-pool %q: want an IPv4 CIDR from /16 to /30, e.g. %s", s, DefaultLBAddressPool)
	}
	p = p.Masked()
	ifaces, _ := net.Interfaces()
	for _, iface := range ifaces {
		if iface.Name == cloudlocal.PublicInterface {
			continue
		}
		addrs, _ := iface.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if hp, err := netip.ParsePrefix(n.String()); err == nil && hp.Addr().Is4() && hp.Masked().Overlaps(p) && hp.Bits() < 32 {
					return netip.Prefix{}, fmt.Errorf("--lb-address-pool %s overlaps %s on %s; choose a free range", p, n, iface.Name)
				}
			}
		}
	}
	return p, nil
}

// Run installs the CRDs and runs the controllers until ctx ends.
func Run(ctx context.Context, cfg *rest.Config, opts Options) error {
	if opts.Backend == nil || opts.Supervisor == nil || opts.StateDir == "" {
		return fmt.Errorf("manager: Backend, Supervisor and StateDir are required")
	}
	scheme := Scheme()
	if opts.MetricsAddr == "" {
		opts.MetricsAddr = "0"
	}
	if opts.HealthAddr == "" {
		opts.HealthAddr = "0"
	}
	if opts.LeaderElectionNamespace == "" {
		opts.LeaderElectionNamespace = "lotse-system"
	}
	direct, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	if err := InstallCRDs(ctx, direct); err != nil {
		return err
	}
	if err := projectcontroller.Install(ctx, direct); err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: opts.MetricsAddr},
		HealthProbeBindAddress:  opts.HealthAddr,
		LeaderElection:          opts.LeaderElection,
		LeaderElectionID:        "lotse-manager",
		LeaderElectionNamespace: opts.LeaderElectionNamespace,
	})
	if err != nil {
		return err
	}
	if opts.HealthAddr != "0" {
		// Alive and ready as soon as it serves: a manager that does not
		// lead is ready to take over, which is all it does.
		if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
			return err
		}
		if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
			return err
		}
	}
	// The wiring: by default the process backend hosts control planes and
	// the local provider makes machines; the controllers know only their
	// interfaces.
	tenants := opts.Tenants
	if tenants == nil {
		tenants = &tenant.Clients{}
	}
	provider := opts.Provider
	if provider == nil {
		provider = &local.Provider{Supervisor: opts.Supervisor, StateDir: opts.StateDir}
	}
	if opts.LotseBinary == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("manager: the lotse binary for load balancers: %w", err)
		}
		opts.LotseBinary = self
	}
	// Control planes that ask for a seed run there; the seeds' own
	// controller reports on them.
	seedConn := &seedcontroller.Connector{Reader: mgr.GetAPIReader(), Management: cfg}
	opts.Backend, opts.EndpointTask = withSeeds(&opts, seedConn, provider, locateSeed(mgr.GetClient()))
	seeds := &seedcontroller.Reconciler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("lotse"), Management: cfg,
		ImagesProvided: opts.ControlPlaneImage != "" || opts.ImageRegistry != nil}
	if err := seeds.SetupWithManager(mgr); err != nil {
		return err
	}
	endpointTask := opts.EndpointTask
	if endpointTask == nil {
		endpointTask = process.EndpointTask
	}
	pool, err := lbPool(opts.LBAddressPool)
	if err != nil {
		return err
	}
	addonKeeper := &keeper.Keeper{}
	cloudMachines := &cloudlocal.Machines{Client: mgr.GetClient()}
	cloud := &cloudcontroller.Runner{
		Machines: cloudMachines,
		LoadBalancers: &cloudlocal.LoadBalancers{
			Supervisor: opts.Supervisor, StateDir: opts.StateDir, Binary: opts.LotseBinary, PublicPool: pool,
			NodesCIDR: func(ref clusterref.Ref) (netip.Prefix, error) {
				access, err := opts.Backend.NodeAccess(controlplane.Spec{Key: ref.Key()})
				if err != nil {
					return netip.Prefix{}, err
				}
				return netip.ParsePrefix(access.NodesCIDR)
			},
		},
	}
	// The cloud API the clusters' own cloud controller managers (processes
	// of their control planes here) ask; control planes on seeds keep the
	// manager's controllers.
	var cloudAPI clustercontroller.CloudAPI
	if !opts.SeedsOnly && opts.StateDir != "" {
		host, err := cloudapi.Start(ctx, &cloudapi.Server{Machines: cloudMachines, LoadBalancers: cloud.LoadBalancers},
			filepath.Join(opts.StateDir, "cloud-api"))
		if err != nil {
			return fmt.Errorf("manager: the cloud API: %w", err)
		}
		cloudAPI = host
	}
	backupDir := opts.BackupDir
	if backupDir == "" {
		backupDir = filepath.Join(opts.StateDir, "backups")
	}
	if abs, err := filepath.Abs(backupDir); err == nil {
		backupDir = abs
	}
	destinations := &backup.Destinations{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), DefaultDir: backupDir,
		WorkDir: filepath.Join(backupDir, ".work")}
	rec := &clustercontroller.Reconciler{
		Destinations: destinations,
		Provider:     provider,
		Tenants:      tenants,
		Addons:       addonKeeper,
		Cloud:        cloud,
		CloudAPI:     cloudAPI,
		Responders:   &hibernation.Responders{},
		DNSUpstreams: opts.DNSUpstreams,
		Client:       mgr.GetClient(),
		APIReader:    mgr.GetAPIReader(),
		Backend:      opts.Backend,
		Releases:     opts.Releases,
		Recorder:     mgr.GetEventRecorder("lotse"),
		EndpointTask: endpointTask,
		SeedsOnly:    opts.SeedsOnly,
		BuildLog:     opts.BuildLog,
	}
	if err := rec.SetupWithManager(mgr); err != nil {
		return err
	}
	addonKeeper.Changed = rec.NotifyAddons
	maint := &maintenancecontroller.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("lotse")}
	if err := maint.SetupWithManager(mgr); err != nil {
		return err
	}
	backups := &backupcontroller.Reconciler{
		Client: mgr.GetClient(), Backend: opts.Backend, Releases: opts.Releases, Destinations: destinations,
		Recorder: mgr.GetEventRecorder("lotse"),
	}
	if err := backups.SetupWithManager(mgr); err != nil {
		return err
	}
	for _, u := range opts.AlertWebhooks {
		if err := care.CheckWebhookURL(u); err != nil {
			return err
		}
	}
	metrics.Register(mgr.GetClient())
	if err := mgr.Add(&care.Controller{
		Client: mgr.GetClient(), Backend: opts.Backend, Releases: opts.Releases, CloudAPI: cloudAPI, Recorder: mgr.GetEventRecorder("lotse"),
		Notifier: &care.Webhook{URLs: opts.AlertWebhooks}, AlertAfter: opts.AlertAfter, RestartAfter: opts.RestartUnhealthyAfter,
		Refresh: func(ref clusterref.Ref) { rec.NotifyProcess(ref.Key() + "/care") },
	}); err != nil {
		return err
	}
	fleets := &fleetcontroller.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("lotse")}
	if opts.FleetDNSAddr != "0" {
		// The fleets' authoritative DNS server: its zones are the running
		// fleets'.
		addr := opts.FleetDNSAddr
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		server := &fleetdns.Server{Zones: fleets}
		if err := server.Start(ctx, addr); err != nil {
			return fmt.Errorf("fleet DNS server on %s: %w", addr, err)
		}
		fleets.DNSServer = server.Addr()
	}
	if err := fleets.SetupWithManager(mgr); err != nil {
		return err
	}
	projects := &projectcontroller.Reconciler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("lotse")}
	if err := projects.SetupWithManager(mgr); err != nil {
		return err
	}
	kubeconfigs := &kubeconfigrequestcontroller.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("lotse")}
	if err := kubeconfigs.SetupWithManager(mgr); err != nil {
		return err
	}
	if opts.WebhookAddr != "0" {
		addr := opts.WebhookAddr
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		admission, err := startAdmission(ctx, direct, admissionOptions{addr: addr, advertise: opts.WebhookAdvertiseAddress, service: opts.WebhookService,
			stateDir: opts.StateDir}, &quota.Admitter{Reader: mgr.GetAPIReader(), Scheme: scheme})
		if err != nil {
			return err
		}
		defer admission.stop()
		if err := mgr.Add(admission.register(mgr.GetClient(), opts.WebhookOwner)); err != nil {
			return err
		}
	} else if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		for {
			err := removeWebhookConfiguration(ctx, mgr.GetClient())
			if err == nil || ctx.Err() != nil {
				return nil
			}
			ctrl.Log.WithName("admission").Error(err, "remove the webhook configuration of a manager with the webhook on; retrying")
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(10 * time.Second):
			}
		}
	})); err != nil {
		return err
	}
	if opts.DashboardAddr != "" {
		board, err := dashboard.Start(cfg, dashboard.Options{Addr: opts.DashboardAddr})
		if err != nil {
			return err
		}
		defer func() { _ = board.Stop() }()
		ctrl.Log.Info("dashboard serving", "url", board.URL)
		if opts.BuildLog != nil {
			fmt.Fprintf(opts.BuildLog, "dashboard at %s\n", board.URL)
		}
	}
	sleep := &hibernationcontroller.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("lotse")}
	if err := sleep.SetupWithManager(mgr); err != nil {
		return err
	}
	imgs := &nodeImages{builder: &images.Builder{CacheDir: opts.Releases.Dir, Log: opts.BuildLog}, releases: opts.Releases}
	machines := &machinecontroller.Reconciler{
		Client:   mgr.GetClient(),
		Backend:  opts.Backend,
		Provider: provider,
		Releases: opts.Releases,
		Images:   imgs.source,
		Tenants:  tenants,
		Recorder: mgr.GetEventRecorder("lotse"),
	}
	if err := machines.SetupWithManager(mgr); err != nil {
		return err
	}
	opts.Supervisor.SetOnChange(rec.NotifyProcess)
	defer opts.Supervisor.SetOnChange(nil)
	// A backend that sees its API servers become ready says so: the
	// cluster is reported available then, not at its next look.
	if n, ok := opts.Backend.(readyNotifier); ok {
		n.SetOnReady(rec.NotifyProcess)
		defer n.SetOnReady(nil)
	}
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		return collectOrphans(ctx, mgr.GetClient(), opts)
	})); err != nil {
		return err
	}
	if opts.Started != nil {
		if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
			if mgr.GetCache().WaitForCacheSync(ctx) {
				close(opts.Started)
			}
			return nil
		})); err != nil {
			return err
		}
	}
	return mgr.Start(ctx)
}

// readyNotifier is a backend that tells when a starting control plane's
// API becomes ready.
type readyNotifier interface {
	SetOnReady(func(key string))
}

// collectOrphans stops control-plane processes an earlier lotse left running
// for clusters that no longer exist (for example when someone removed the
// finalizer by hand while lotse was down).
func collectOrphans(ctx context.Context, c client.Client, opts Options) error {
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(10 * time.Second): // let the reconcilers claim what is theirs first
	}
	seen := map[string]bool{}
	for _, name := range opts.Supervisor.Unclaimed() {
		parts := strings.Split(name, "/")
		if len(parts) < 4 || parts[0] != "clusters" {
			continue
		}
		key := strings.Join(parts[:3], "/")
		if seen[key] {
			continue
		}
		seen[key] = true
		cl := &lotsev1.Cluster{}
		err := c.Get(ctx, client.ObjectKey{Namespace: parts[1], Name: parts[2]}, cl)
		if err == nil || !isNotFound(err) {
			continue
		}
		ctrl.Log.Info("removing control plane of a cluster that no longer exists", "key", key)
		if err := opts.Backend.Delete(ctx, key); err != nil {
			ctrl.Log.Error(err, "remove orphaned control plane", "key", key)
		}
	}
	return nil
}

func isNotFound(err error) bool {
	return client.IgnoreNotFound(err) == nil
}

// Describe is a one-line summary for logs.
func (o Options) Describe() string {
	return fmt.Sprintf("state=%s cache=%s", o.StateDir, o.Releases.Dir)
}
