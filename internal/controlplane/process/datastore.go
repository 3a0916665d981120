package process

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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
	// EtcdVersion is that binary's version: data an etcd wrote may not
	// open in an older one, so a lost binary is only ever replaced by one
	// of the same version or newer.
	EtcdVersion string `json:"etcdVersion,omitempty"`
}

func (b *Backend) datastoreStatePath() string {
	return filepath.Join(b.Dir(SharedDatastoreKey), "datastore.json")
}

// newDatastoreUser names a cluster's etcd user and role in the shared
// datastore: its key ("clusters/NS/NAME", readable in etcdctl) and a
// random suffix, so a cluster created again under the same name is
// another user, and a certificate kept from the one before opens nothing.
func newDatastoreUser(key string) (string, error) {
	buf := make([]byte, 6)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	return key + "@" + hex.EncodeToString(buf), nil
}

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
// recording the given one (of version) the first time, or when the
// recorded one is gone from the release cache and the given one is not
// older.
func (b *Backend) datastoreEtcd(etcdBinary, version string) (string, error) {
	var st datastoreState
	data, err := os.ReadFile(b.datastoreStatePath())
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &st); err != nil {
			return "", fmt.Errorf("read %s: %w", b.datastoreStatePath(), err)
		}
		if _, err := os.Stat(st.Etcd); err == nil {
			return st.Etcd, nil
		}
		if etcdBinary == "" || olderVersion(version, st.EtcdVersion) {
			return "", fmt.Errorf("the shared datastore's etcd %s (%s) is gone from the release cache; build a release with etcd %s again (lotse release build VERSION)",
				st.EtcdVersion, st.Etcd, st.EtcdVersion)
		}
	case !errors.Is(err, os.ErrNotExist):
		return "", err
	case etcdBinary == "":
		return "", fmt.Errorf("the shared datastore has no etcd recorded in %s", b.datastoreStatePath())
	}
	st = datastoreState{Etcd: etcdBinary, EtcdVersion: version}
	data, _ = json.Marshal(st)
	if err := os.MkdirAll(b.Dir(SharedDatastoreKey), 0o700); err != nil {
		return "", err
	}
	return etcdBinary, fsutil.WriteFileAtomic(b.datastoreStatePath(), data, 0o600)
}

// olderVersion reports whether dotted version a is older than b ("" is
// older than anything but "").
func olderVersion(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) || i < len(pb); i++ {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(pa[i])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(pb[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
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
// etcdBinary (of etcdVersion) is used if none is recorded yet. Only the
// start holds the datastore's lock: the health check and the clients of
// many clusters need not queue behind each other.
func (b *Backend) ensureSharedDatastore(ctx context.Context, etcdBinary, etcdVersion string) (bool, string, error) {
	l, p, err := b.startSharedDatastore(etcdBinary, etcdVersion)
	if err != nil {
		return false, "", err
	}
	if h := b.etcdHealth(ctx, l, p); !quorum(h) {
		return false, "shared datastore: " + describeUnhealthy(h), nil
	}
	if b.datastoreAuthOn.Load() {
		return true, "", nil
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
	if !st.Enabled {
		// etcd enables authentication only once a user "root" holds the
		// root role; Lotse's client certificate names that user. Each
		// step may run twice (another cluster's task, a restarted lotse).
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
	}
	b.datastoreAuthOn.Store(true)
	return true, "", nil
}

// startSharedDatastore makes sure the shared datastore's process runs.
func (b *Backend) startSharedDatastore(etcdBinary, etcdVersion string) (Layout, pki.ClusterPKI, error) {
	defer b.lock(SharedDatastoreKey)()
	l, err := b.ensureDatastoreLayout()
	if err != nil {
		return l, pki.ClusterPKI{}, err
	}
	p, err := pki.EnsureDatastore(b.datastorePKI().Dir, "lotse-shared-datastore")
	if err != nil {
		return l, p, fmt.Errorf("shared datastore PKI: %w", err)
	}
	etcd, err := b.datastoreEtcd(etcdBinary, etcdVersion)
	if err != nil {
		return l, p, err
	}
	return l, p, b.Supervisor.Ensure(b.datastoreSpec(etcd, l, p))
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
// it changes nothing once the tenant is as it should be; a role or user
// found otherwise (a half-done earlier attempt, a change by hand) is set
// up again from scratch.
func (b *Backend) ensureDatastoreTenant(ctx context.Context, spec controlplane.Spec, l Layout) (bool, string, error) {
	user, prefix := l.DatastoreUser, datastorePrefix(spec.Key)+"/"
	if user == "" {
		return false, "", fmt.Errorf("the layout of %s names no shared datastore user", spec.Key)
	}
	cli, err := b.datastoreClient()
	if err != nil {
		return false, "", err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if !tenantComplete(ctx, cli, user, prefix) {
		if _, err := cli.RoleDelete(ctx, user); err != nil && !errors.Is(err, rpctypes.ErrRoleNotFound) {
			return false, fmt.Sprintf("shared datastore: reset role %s: %v", user, err), nil
		}
		if _, err := cli.RoleAdd(ctx, user); err != nil {
			return false, fmt.Sprintf("shared datastore: add role %s: %v", user, err), nil
		}
		if _, err := cli.RoleGrantPermission(ctx, user, prefix, clientv3.GetPrefixRangeEnd(prefix), clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
			return false, fmt.Sprintf("shared datastore: grant %s: %v", user, err), nil
		}
		if _, err := cli.UserAddWithOptions(ctx, user, "", &clientv3.UserAddOptions{NoPassword: true}); err != nil && !errors.Is(err, rpctypes.ErrUserAlreadyExist) {
			return false, fmt.Sprintf("shared datastore: add user %s: %v", user, err), nil
		}
		if u, err := cli.UserGet(ctx, user); err == nil {
			for _, r := range u.Roles {
				if r == user {
					continue
				}
				if _, err := cli.UserRevokeRole(ctx, user, r); err != nil {
					return false, fmt.Sprintf("shared datastore: revoke role %s from %s: %v", r, user, err), nil
				}
			}
		}
		if _, err := cli.UserGrantRole(ctx, user, user); err != nil {
			return false, fmt.Sprintf("shared datastore: grant role %s: %v", user, err), nil
		}
		log.FromContext(ctx).Info("shared datastore: tenant set up", "user", user, "prefix", prefix)
	}
	if err := b.datastorePKI().EnsureDatastoreClient(b.PKI(spec.Key), user); err != nil {
		return false, "", fmt.Errorf("shared datastore client certificate: %w", err)
	}
	return true, "", nil
}

// tenantComplete reports whether user exists with its own role alone,
// and the role allows exactly its prefix.
func tenantComplete(ctx context.Context, cli *clientv3.Client, user, prefix string) bool {
	u, err := cli.UserGet(ctx, user)
	if err != nil || len(u.Roles) != 1 || u.Roles[0] != user {
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
// after the last other cluster went). It tries once: an error (the
// datastore not answering) leaves the cluster's directory, so the
// caller's next attempt finds it again. Running it again finds nothing.
func (b *Backend) deleteDatastoreTenant(ctx context.Context, key string, l Layout) error {
	if _, err := os.Stat(b.datastoreStatePath()); errors.Is(err, os.ErrNotExist) {
		return nil // never started: nothing of the cluster's can be in it
	}
	ok, msg, err := b.ensureSharedDatastore(ctx, "", "")
	if err != nil {
		return fmt.Errorf("removing %s from the shared datastore: %w", key, err)
	}
	if !ok {
		return fmt.Errorf("removing %s from the shared datastore: %s", key, msg)
	}
	cli, err := b.datastoreClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	prefix := datastorePrefix(key) + "/"
	if _, err := cli.Delete(ctx, prefix, clientv3.WithPrefix()); err != nil {
		return fmt.Errorf("shared datastore: delete the keys below %s: %w", prefix, err)
	}
	if l.DatastoreUser == "" {
		return nil
	}
	if _, err := cli.UserDelete(ctx, l.DatastoreUser); err != nil && !errors.Is(err, rpctypes.ErrUserNotFound) {
		return fmt.Errorf("shared datastore: delete user %s: %w", l.DatastoreUser, err)
	}
	if _, err := cli.RoleDelete(ctx, l.DatastoreUser); err != nil && !errors.Is(err, rpctypes.ErrRoleNotFound) {
		return fmt.Errorf("shared datastore: delete role %s: %w", l.DatastoreUser, err)
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
