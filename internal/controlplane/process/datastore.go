package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/fsutil"
	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/ports"
	"github.com/lotse/lotse/internal/supervisor"
)

// The shared datastore: one etcd that keeps the data of many clusters,
// each under a key prefix of its own (the API server's --etcd-prefix),
// reachable only as the cluster's own etcd user, whose role allows that
// prefix and nothing else; the way Kamaji shares a datastore. It saves
// each cluster an etcd process. Lotse starts it with the first cluster
// that uses it and is its only root. etcd's compaction covers the whole
// keyspace and needs root, so the datastore compacts itself and the
// tenants' API servers do not try.

// SharedDatastoreKey is the shared datastore's directory and the prefix
// of its process names.
const SharedDatastoreKey = "datastores/shared"

// sharedCompaction is how much history the shared datastore keeps: the
// API server's own default compaction interval.
const sharedCompaction = "5m"

// datastoreState is what the shared datastore records besides its ports.
type datastoreState struct {
	// Etcd is the etcd binary it runs: the release of the first cluster
	// that used it. Kept, so that clusters of other releases do not
	// restart it.
	Etcd string `json:"etcd"`
}

func (b *Backend) datastoreStatePath() string {
	return filepath.Join(b.Dir(SharedDatastoreKey), "datastore.json")
}

// datastoreUser is a cluster's etcd user and role in the shared
// datastore: its key ("clusters/NS/NAME"), readable in etcdctl.
func datastoreUser(key string) string { return key }

// datastorePrefix is a cluster's --etcd-prefix in the shared datastore.
// Its keys are PREFIX/..., and the role allows exactly that range: the
// prefix of "clusters/ns/c1/" does not cover "clusters/ns/c10/".
func datastorePrefix(key string) string { return "/" + key }

// ensureDatastoreLayout allocates the shared datastore's ports once.
func (b *Backend) ensureDatastoreLayout() (Layout, error) {
	layoutMu.Lock()
	defer layoutMu.Unlock()
	if l, err := b.LoadLayout(SharedDatastoreKey); err == nil {
		return l, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return l, err
	}
	p, err := ports.Allocate(3)
	if err != nil {
		return Layout{}, err
	}
	l := Layout{EtcdClient: p[0:1], EtcdPeer: p[1:2], EtcdHTTP: p[2:3]}
	return l, b.saveLayout(SharedDatastoreKey, l)
}

// datastoreEtcd returns the etcd binary the shared datastore runs,
// recording etcdBinary the first time (or when the recorded one is gone
// from the release cache).
func (b *Backend) datastoreEtcd(etcdBinary string) (string, error) {
	var st datastoreState
	if data, err := os.ReadFile(b.datastoreStatePath()); err == nil {
		if err := json.Unmarshal(data, &st); err != nil {
			return "", fmt.Errorf("read %s: %w", b.datastoreStatePath(), err)
		}
		if _, err := os.Stat(st.Etcd); err == nil {
			return st.Etcd, nil
		}
	}
	if etcdBinary == "" {
		return "", fmt.Errorf("the shared datastore has no etcd binary recorded in %s", b.datastoreStatePath())
	}
	st.Etcd = etcdBinary
	data, _ := json.Marshal(st)
	if err := os.MkdirAll(b.Dir(SharedDatastoreKey), 0o700); err != nil {
		return "", err
	}
	return etcdBinary, fsutil.WriteFileAtomic(b.datastoreStatePath(), data, 0o600)
}

// datastorePKI is the shared datastore's PKI.
func (b *Backend) datastorePKI() pki.ClusterPKI { return b.PKI(SharedDatastoreKey) }

// datastoreSpec is the shared datastore's etcd process.
func (b *Backend) datastoreSpec(etcd string, l Layout, p pki.ClusterPKI) supervisor.Spec {
	s := b.etcdMemberSpec(SharedDatastoreKey, etcd, l, p, 0)
	s.Args = append(s.Args,
		"--auto-compaction-mode=periodic",
		"--auto-compaction-retention="+sharedCompaction,
	)
	return s
}

// ensureSharedDatastore starts the shared datastore if it does not run,
// waits for it to be healthy and turns on its authentication (once).
// etcdBinary is used if none is recorded yet.
func (b *Backend) ensureSharedDatastore(ctx context.Context, etcdBinary string) (bool, string, error) {
	defer b.lock(SharedDatastoreKey)()
	l, err := b.ensureDatastoreLayout()
	if err != nil {
		return false, "", err
	}
	p, err := pki.EnsureDatastore(b.datastorePKI().Dir, "lotse-shared-datastore")
	if err != nil {
		return false, "", fmt.Errorf("shared datastore PKI: %w", err)
	}
	etcd, err := b.datastoreEtcd(etcdBinary)
	if err != nil {
		return false, "", err
	}
	if err := b.Supervisor.Ensure(b.datastoreSpec(etcd, l, p)); err != nil {
		return false, "", err
	}
	if h := b.etcdHealth(ctx, l, p); !quorum(h) {
		return false, "shared datastore: " + describeUnhealthy(h), nil
	}
	cli, err := b.etcdClientAt(p, l.etcdClientURLs()...)
	if err != nil {
		return false, "", err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := cli.AuthStatus(ctx)
	if err != nil {
		return false, fmt.Sprintf("shared datastore: %v", err), nil
	}
	if st.Enabled {
		return true, "", nil
	}
	// etcd enables authentication only once a user "root" holds the root
	// role; Lotse's client certificate names that user.
	if _, err := cli.UserAddWithOptions(ctx, pki.DatastoreRootUser, "", &clientv3.UserAddOptions{NoPassword: true}); err != nil && !errors.Is(err, rpctypes.ErrUserAlreadyExist) {
		return false, "", fmt.Errorf("shared datastore: add the root user: %w", err)
	}
	if _, err := cli.UserGrantRole(ctx, pki.DatastoreRootUser, "root"); err != nil {
		return false, "", fmt.Errorf("shared datastore: grant the root role: %w", err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return false, "", fmt.Errorf("shared datastore: enable authentication: %w", err)
	}
	log.FromContext(ctx).Info("shared datastore: authentication enabled")
	return true, "", nil
}

// datastoreClient connects to the shared datastore as its root.
func (b *Backend) datastoreClient() (*clientv3.Client, error) {
	l, err := b.LoadLayout(SharedDatastoreKey)
	if err != nil {
		return nil, fmt.Errorf("the shared datastore has not been created: %w", err)
	}
	return b.etcdClientAt(b.datastorePKI(), l.etcdClientURLs()...)
}

// ensureDatastoreTenant gives a cluster its user and role in the shared
// datastore (read and write below its prefix, nothing else) and its
// client certificate. It reads before it writes: run on every reconcile,
// it changes nothing once the tenant exists.
func (b *Backend) ensureDatastoreTenant(ctx context.Context, spec controlplane.Spec) (bool, string, error) {
	user, prefix := datastoreUser(spec.Key), datastorePrefix(spec.Key)+"/"
	cli, err := b.datastoreClient()
	if err != nil {
		return false, "", err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if !tenantComplete(ctx, cli, user, prefix) {
		if _, err := cli.RoleAdd(ctx, user); err != nil && !errors.Is(err, rpctypes.ErrRoleAlreadyExist) {
			return false, fmt.Sprintf("shared datastore: add role %s: %v", user, err), nil
		}
		if _, err := cli.RoleGrantPermission(ctx, user, prefix, clientv3.GetPrefixRangeEnd(prefix), clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
			return false, fmt.Sprintf("shared datastore: grant %s: %v", user, err), nil
		}
		if _, err := cli.UserAddWithOptions(ctx, user, "", &clientv3.UserAddOptions{NoPassword: true}); err != nil && !errors.Is(err, rpctypes.ErrUserAlreadyExist) {
			return false, fmt.Sprintf("shared datastore: add user %s: %v", user, err), nil
		}
		if _, err := cli.UserGrantRole(ctx, user, user); err != nil {
			return false, fmt.Sprintf("shared datastore: grant role %s: %v", user, err), nil
		}
		log.FromContext(ctx).Info("shared datastore: tenant added", "user", user, "prefix", prefix)
	}
	if err := b.datastorePKI().EnsureDatastoreClient(b.PKI(spec.Key), user); err != nil {
		return false, "", fmt.Errorf("shared datastore client certificate: %w", err)
	}
	return true, "", nil
}

// tenantComplete reports whether user exists with its role, and the role
// allows exactly its prefix.
func tenantComplete(ctx context.Context, cli *clientv3.Client, user, prefix string) bool {
	u, err := cli.UserGet(ctx, user)
	if err != nil || !slices.Contains(u.Roles, user) {
		return false
	}
	r, err := cli.RoleGet(ctx, user)
	if err != nil || len(r.Perm) != 1 {
		return false
	}
	perm := r.Perm[0]
	return string(perm.Key) == prefix && string(perm.RangeEnd) == clientv3.GetPrefixRangeEnd(prefix) &&
		perm.PermType == clientv3.PermReadWrite
}

// deleteDatastoreTenant removes a cluster's keys, user and role from the
// shared datastore, starting it if it does not run (a lotse restarted
// after the last other cluster went). Running it again finds nothing.
func (b *Backend) deleteDatastoreTenant(ctx context.Context, key string) error {
	if _, err := b.LoadLayout(SharedDatastoreKey); errors.Is(err, os.ErrNotExist) {
		return nil // never created: nothing of the cluster's can be in it
	}
	for {
		ok, msg, err := b.ensureSharedDatastore(ctx, "")
		if err != nil {
			return err
		}
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("removing %s from the shared datastore: %s: %w", key, msg, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
	cli, err := b.datastoreClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	user, prefix := datastoreUser(key), datastorePrefix(key)+"/"
	if _, err := cli.Delete(ctx, prefix, clientv3.WithPrefix()); err != nil {
		return fmt.Errorf("shared datastore: delete the keys below %s: %w", prefix, err)
	}
	if _, err := cli.UserDelete(ctx, user); err != nil && !errors.Is(err, rpctypes.ErrUserNotFound) {
		return fmt.Errorf("shared datastore: delete user %s: %w", user, err)
	}
	if _, err := cli.RoleDelete(ctx, user); err != nil && !errors.Is(err, rpctypes.ErrRoleNotFound) {
		return fmt.Errorf("shared datastore: delete role %s: %w", user, err)
	}
	return nil
}

// datastoreHealth is the shared datastore's health as a cluster on it
// reports it: one entry per member, named etcd-shared-N.
func (b *Backend) datastoreHealth(ctx context.Context) []controlplane.ComponentHealth {
	l, err := b.LoadLayout(SharedDatastoreKey)
	if err != nil {
		return []controlplane.ComponentHealth{{Name: CompEtcd + "-shared-0", Message: "the shared datastore has not been created"}}
	}
	hs := b.etcdHealth(ctx, l, b.datastorePKI())
	for i := range hs {
		hs[i].Name = strings.Replace(hs[i].Name, CompEtcd+"-", CompEtcd+"-shared-", 1)
		if !hs[i].Healthy {
			hs[i].Message = "shared datastore: " + hs[i].Message
		}
	}
	return hs
}

// etcdClientArgs are the API server's flags for its datastore.
func (b *Backend) etcdClientArgs(spec controlplane.Spec, l Layout, p pki.ClusterPKI) []string {
	if !spec.SharedDatastore {
		return []string{
			"--etcd-servers=" + strings.Join(l.etcdClientURLs(), ","),
			"--etcd-cafile=" + p.Cert(pki.EtcdCAName),
			"--etcd-certfile=" + p.Cert(pki.APIServerEtcdName),
			"--etcd-keyfile=" + p.Key(pki.APIServerEtcdName),
		}
	}
	shared, _ := b.LoadLayout(SharedDatastoreKey) // written by ensureLayout before
	return []string{
		"--etcd-servers=" + strings.Join(shared.etcdClientURLs(), ","),
		"--etcd-cafile=" + p.Cert(pki.DatastoreCAName),
		"--etcd-certfile=" + p.Cert(pki.DatastoreClientName),
		"--etcd-keyfile=" + p.Key(pki.DatastoreClientName),
		"--etcd-prefix=" + datastorePrefix(spec.Key),
		// Compaction is the datastore's own (see above).
		"--etcd-compaction-interval=0",
	}
}
