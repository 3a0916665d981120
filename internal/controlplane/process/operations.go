package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/gobuild"
	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/supervisor"
)

// Operations on a running control plane that the lifecycle controllers
// (upgrades, backups) build on.

// instances returns the process specs of one component, in instance order,
// and a probe of their health (one entry per instance, same order).
func (b *Backend) instances(spec controlplane.Spec, l Layout, p pki.ClusterPKI, component string) ([]supervisor.Spec, func(context.Context) []controlplane.ComponentHealth, error) {
	switch component {
	case CompEtcd:
		return b.etcdSpecs(spec, l, p), func(ctx context.Context) []controlplane.ComponentHealth { return b.etcdHealth(ctx, l, p) }, nil
	case CompAPIServer:
		return b.apiServerSpecs(spec, l, p), func(ctx context.Context) []controlplane.ComponentHealth { return b.apiServerHealth(ctx, l, p) }, nil
	case CompTunnelServer:
		return b.tunnelServerSpecs(spec, l, p), func(ctx context.Context) []controlplane.ComponentHealth { return b.tunnelHealth(ctx, l) }, nil
	case CompControllerManager:
		return b.controllerManagerSpecs(spec, l, p), func(ctx context.Context) []controlplane.ComponentHealth {
			return b.healthzAll(ctx, CompControllerManager, l.ControllerManager, p)
		}, nil
	case CompScheduler:
		return b.schedulerSpecs(spec, l, p), func(ctx context.Context) []controlplane.ComponentHealth {
			return b.healthzAll(ctx, CompScheduler, l.Scheduler, p)
		}, nil
	case CompCloudController:
		if spec.CloudController == nil {
			return nil, nil, fmt.Errorf("the control plane runs no cloud controller manager of its own")
		}
		return b.cloudControllerSpecs(spec, l, p), func(ctx context.Context) []controlplane.ComponentHealth {
			return b.healthzAll(ctx, CompCloudController, l.CloudController, p)
		}, nil
	}
	return nil, nil, fmt.Errorf("unknown control-plane component %q (etcd, kube-apiserver, konnectivity-server, kube-controller-manager, kube-scheduler, cloud-controller-manager)", component)
}

// RestartComponent restarts the instances of one component one at a time:
// each is stopped gracefully and started again (with the spec's binaries,
// so an upgrade is a restart with new binaries), and the next one only
// after this one answers its health check. Three etcd members keep their
// quorum and two API servers keep serving through the load balancer.
func (b *Backend) RestartComponent(ctx context.Context, spec controlplane.Spec, component string) error {
	defer b.lock(spec.Key)()
	l, err := b.LoadLayout(spec.Key)
	if err != nil {
		return err
	}
	specs, health, err := b.instances(spec, l, b.PKI(spec.Key), component)
	if err != nil {
		return err
	}
	if component == CompAPIServer {
		if err := b.writeEgressSelectors(spec, l); err != nil {
			return err
		}
	}
	for i, s := range specs {
		b.Supervisor.Stop(s.Name)
		if err := b.Supervisor.Ensure(s); err != nil {
			return err
		}
		for {
			hs := health(ctx)
			if i < len(hs) && hs[i].Healthy {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s did not become healthy after its restart: %w", s.Name, ctx.Err())
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

// snapshotHealthWait is how long a snapshot waits for a healthy etcd
// member.
const snapshotHealthWait = 30 * time.Second

// Snapshot writes a consistent snapshot of the control plane's etcd to
// path (etcdctl snapshot save from the first healthy member), as a backup
// takes it. The file holds every key in plain etcd form: Secrets stay
// encrypted with the cluster's encryption key, which is not in it.
func (b *Backend) Snapshot(ctx context.Context, spec controlplane.Spec, path string) error {
	if spec.SharedDatastore {
		return errSharedBackup
	}
	l, err := b.LoadLayout(spec.Key)
	if err != nil {
		return err
	}
	p := b.PKI(spec.Key)
	// A member whose health check is slow (a busy host) is not a dead
	// one: look again for a while before giving up.
	endpoint, why := "", ""
	deadline := time.Now().Add(snapshotHealthWait)
	for endpoint == "" {
		var unhealthy []string
		for i, h := range b.etcdHealth(ctx, l, p) {
			if h.Healthy {
				endpoint = l.etcdClientURLs()[i]
				break
			}
			unhealthy = append(unhealthy, h.Name+": "+h.Message)
		}
		why = strings.Join(unhealthy, "; ")
		if endpoint != "" || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no healthy etcd member to take a snapshot from (%s): %w", why, ctx.Err())
		case <-time.After(time.Second):
		}
	}
	if endpoint == "" {
		return fmt.Errorf("no healthy etcd member to take a snapshot from after %s (%s)", snapshotHealthWait, why)
	}
	tmp := path + ".part"
	cmd := gobuild.Command(ctx, spec.Binaries.Path("etcdctl"), "snapshot", "save", tmp,
		"--endpoints="+endpoint, "--cacert="+p.Cert(pki.EtcdCAName), "--cert="+p.Cert(pki.EtcdAdminName), "--key="+p.Key(pki.EtcdAdminName))
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("etcdctl snapshot save: %v: %s", err, out)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// errSharedBackup: an etcd snapshot holds the whole keyspace, so it cannot
// be a backup of one tenant of the shared datastore.
var errSharedBackup = errors.New("backups of a cluster on the shared datastore are not supported yet (an etcd snapshot would hold every tenant's data); use a dedicated datastore for clusters that need backups")
