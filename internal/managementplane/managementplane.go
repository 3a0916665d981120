// Package managementplane is `lotse up`: it starts the management API (its
// own etcd, kube-apiserver and controller-manager, run by the same process
// backend as tenant control planes), installs Lotse's CRDs and runs the
// manager in the foreground.
package managementplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	cloudlocal "github.com/lotse/lotse/internal/cloudprovider/local"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/controlplane/process"
	"github.com/lotse/lotse/internal/fsutil"
	"github.com/lotse/lotse/internal/hostlimits"
	"github.com/lotse/lotse/internal/images"
	"github.com/lotse/lotse/internal/machine/local"
	"github.com/lotse/lotse/internal/manager"
	"github.com/lotse/lotse/internal/releases"
	"github.com/lotse/lotse/internal/supervisor"
	"github.com/lotse/lotse/internal/tasks"
)

// Key is the control-plane key of the management plane.
const Key = "management"

// KubeconfigFile is the management kubeconfig inside the state directory.
const KubeconfigFile = "management.kubeconfig"

// DefaultStateDir is $LOTSE_STATE_DIR, else $XDG_STATE_HOME/lotse, else ~/.local/state/lotse.
func DefaultStateDir() string {
	if d := os.Getenv("LOTSE_STATE_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "lotse")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "/var/lib/lotse"
	}
	return filepath.Join(home, ".local", "state", "lotse")
}

// Options of `lotse up`.
type Options struct {
	StateDir string
	CacheDir string
	// Out receives progress for the person who ran `lotse up`.
	Out io.Writer
	// DNSUpstreams are resolvers the clusters' CoreDNS forwards to.
	DNSUpstreams []string
	// LBAddressPool is the range of public LoadBalancer addresses.
	LBAddressPool string
	// BackupDir keeps cluster snapshots without another destination
	// (empty: STATE/backups).
	BackupDir string
	// APIServerGOGC is the clusters' API servers' GOGC (0: Go's default).
	APIServerGOGC int
	// MetricsAddr serves the manager's Prometheus metrics ("" or "0": off).
	MetricsAddr string
	// FleetDNSAddr: see manager.Options.
	FleetDNSAddr string
	// AlertWebhooks and AlertAfter: see manager.Options.
	AlertWebhooks []string
	AlertAfter    time.Duration
	// RestartUnhealthyAfter: see manager.Options.
	RestartUnhealthyAfter time.Duration
	// DashboardAddr: see manager.Options.
	DashboardAddr string
	// ImageRegistry and ImagePullCredentials: see manager.Options (for
	// seeds that are not Lotse clusters of this host).
	ImageRegistry        *images.Repository
	ImagePullCredentials []byte
}

// Up runs the management plane until ctx ends, then stops every control
// plane it supervises (their data stays; the next Up brings them back).
func Up(ctx context.Context, opts Options) error {
	if opts.APIServerGOGC < 0 {
		return fmt.Errorf("--apiserver-gogc %d: give a positive percentage, or 0 for Go's default", opts.APIServerGOGC)
	}
	stateDir, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return err
	}
	out := opts.Out
	if out == nil {
		out = io.Discard
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return err
	}
	unlock, err := lockStateDir(stateDir)
	if err != nil {
		return err
	}
	defer unlock()
	// Many control planes and machines outgrow the default inotify limits.
	if raised, err := hostlimits.Ensure(); err != nil {
		fmt.Fprintf(out, "warning: %v\n", err)
	} else if len(raised) > 0 {
		fmt.Fprintf(out, "raised host limits: %s\n", strings.Join(raised, ", "))
	}

	store := releases.NewStore(opts.CacheDir)
	rel := releases.Default()
	if !store.Installed(rel) {
		fmt.Fprintf(out, "building kubernetes %s and etcd %s into %s (about 10 minutes the first time)\n", rel.Version, rel.Etcd, store.Dir)
	}
	bins, err := store.Ensure(ctx, rel, out)
	if err != nil {
		return err
	}

	logDir := filepath.Join(stateDir, "logs")
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return err
	}
	supLog, err := os.OpenFile(filepath.Join(logDir, "supervisor.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer supLog.Close()
	sup := supervisor.New(supervisor.OwnerID(stateDir), supervisor.Options{Log: supLog})
	backend := process.New(stateDir, sup)
	backend.APIServerGOGC = opts.APIServerGOGC
	// Whatever happens below, leave no process behind when Up returns.
	defer func() {
		fmt.Fprintln(out, "stopping all control planes (their data is kept; `lotse up` brings them back)")
		sup.StopAll()
		if err := local.StopAll(stateDir); err != nil {
			fmt.Fprintln(out, "stopping machines:", err)
		}
	}()

	spec := ManagementSpec(bins)
	start := time.Now()
	if err := converge(ctx, backend.Tasks(spec), out, 3*time.Minute); err != nil {
		return fmt.Errorf("management plane: %w (logs in %s)", err, filepath.Join(backend.Dir(Key), "logs"))
	}
	kubeconfig, err := backend.AdminKubeconfig(spec)
	if err != nil {
		return err
	}
	kubeconfigPath := filepath.Join(stateDir, KubeconfigFile)
	if err := fsutil.WriteFileAtomic(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(out, "management API ready at %s after %s\n", backendEndpoint(backend), time.Since(start).Round(10*time.Millisecond))

	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 50, 100
	started := make(chan struct{})
	go func() {
		select {
		case <-started:
			fmt.Fprintf(out, "lotse is up; manage it with:\n  export LOTSE_KUBECONFIG=%s\n  lotse cluster create demo --wait\n", kubeconfigPath)
		case <-ctx.Done():
		}
	}()
	err = manager.Run(ctx, cfg, manager.Options{
		Releases:              store,
		Backend:               backend,
		StateDir:              stateDir,
		LotseBinary:           backend.LotseBinary,
		Supervisor:            sup,
		BuildLog:              out,
		Started:               started,
		DNSUpstreams:          opts.DNSUpstreams,
		LBAddressPool:         opts.LBAddressPool,
		BackupDir:             opts.BackupDir,
		MetricsAddr:           opts.MetricsAddr,
		FleetDNSAddr:          opts.FleetDNSAddr,
		AlertWebhooks:         opts.AlertWebhooks,
		AlertAfter:            opts.AlertAfter,
		RestartUnhealthyAfter: opts.RestartUnhealthyAfter,
		DashboardAddr:         opts.DashboardAddr,
		ImageRegistry:         opts.ImageRegistry,
		ImagePullCredentials:  opts.ImagePullCredentials,
	})
	if ctx.Err() != nil {
		return nil // a requested stop, not a failure
	}
	return err
}

// ManagementSpec is the control plane of the management API itself: no
// scheduler (it runs no pods), no HA (it is one machine's plane).
func ManagementSpec(bins releases.Binaries) controlplane.Spec {
	return controlplane.Spec{
		Key:                Key,
		Name:               "lotse-management",
		Binaries:           bins,
		PodCIDR:            "10.244.0.0/16",
		ServiceCIDR:        "10.96.0.0/16",
		EncryptionProvider: "aescbc",
		WithoutScheduler:   true,
		WithoutTunnel:      true,
	}
}

func backendEndpoint(b *process.Backend) string {
	l, err := b.LoadLayout(Key)
	if err != nil {
		return "?"
	}
	return l.Endpoint()
}

// converge runs a task graph until it is done, printing each task once it succeeds.
func converge(ctx context.Context, graph []tasks.Task, out io.Writer, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	printed := map[string]bool{}
	start := time.Now()
	for {
		results, err := tasks.Run(ctx, graph)
		if err != nil {
			return err
		}
		for _, r := range results {
			if r.State == tasks.Succeeded && !printed[r.Name] {
				printed[r.Name] = true
				fmt.Fprintf(out, "  %-26s done after %s\n", r.Name, time.Since(start).Round(10*time.Millisecond))
			}
		}
		if results.Done() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", results.Describe(), ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// lockStateDir makes sure only one lotse runs on a state directory; the lock
// goes away with the process, however it ends.
func lockStateDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, "lotse.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another lotse is already running on state directory %s; stop it first or use --state-dir", dir)
		}
		return nil, err
	}
	return func() { f.Close() }, nil
}

// Down stops every process a lotse with this state directory started, for
// when lotse itself was killed and will not be started again.
func Down(stateDir string) (int, error) {
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		return 0, err
	}
	unlock, err := lockStateDir(abs)
	if err != nil {
		return 0, err
	}
	defer unlock()
	owner := supervisor.OwnerID(abs)
	n := len(supervisor.FindProcesses(owner))
	supervisor.New(owner, supervisor.Options{}).StopAll()
	return n, local.StopAll(abs)
}

// Purge removes everything a lotse with this state directory put on the
// host: processes, the machines' containers, mounts, cgroups, network
// namespaces, interfaces, balancer addresses and firewall rules, and finally the state
// directory itself. All data is lost.
func Purge(ctx context.Context, stateDir string) error {
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		return err
	}
	if _, err := Down(abs); err != nil {
		return err
	}
	owner := supervisor.OwnerID(abs)
	// Networks by id: from the cluster directories, and from the machine
	// disks (which outlive a cluster directory removed by hand).
	clusterDirs := map[string]string{}
	dirs, _ := filepath.Glob(filepath.Join(abs, "clusters", "*", "*"))
	for _, d := range dirs {
		rel, _ := filepath.Rel(abs, d)
		clusterDirs[local.NetworkID(owner, filepath.ToSlash(rel))] = d
	}
	disks, _ := filepath.Glob(filepath.Join(local.DiskRoot(abs), "*"))
	for _, d := range disks {
		if id, _, ok := strings.Cut(filepath.Base(d), "-"); ok {
			if _, known := clusterDirs[id]; !known {
				clusterDirs[id] = ""
			}
		}
	}
	var errs []error
	for id, d := range clusterDirs {
		if err := local.DeleteLeftovers(ctx, d, local.DiskRoot(abs), id); err != nil {
			errs = append(errs, err)
		}
	}
	if err := cloudlocal.RemoveAll(ctx, abs); err != nil {
		errs = append(errs, err)
	}
	if err := local.UnmountUnder(abs); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return os.RemoveAll(abs)
}
