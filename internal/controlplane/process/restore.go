package process

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/fsutil"
)

// BackupCredentials returns the files of the control plane's PKI
// directory (certificates, keys, the encryption keys and kubeconfigs), by
// name, for a backup to keep beside the etcd snapshot.
func (b *Backend) BackupCredentials(spec controlplane.Spec) (map[string][]byte, error) {
	return controlplane.BackupCredentialsOf(b.PKI(spec.Key))
}

// Restore replaces the control plane's etcd data with a snapshot and
// leaves the control plane stopped; the next Tasks run starts it on the
// restored data. Every member gets a data directory restored from the same
// snapshot with the cluster's member list, revisions bumped and marked
// compacted. The snapshot's encryption keys join the cluster's own.
//
// Everything that can refuse the snapshot (a key the cluster has under the
// same name with other bytes, a member still joining, etcdutl failing on
// the file) runs before anything stops, and returns ErrRestoreRefused.
// The swap itself is guarded by a marker file: the old data is moved
// aside, not deleted, until every member has its restored directory, and
// while the marker exists a half-done swap is rolled back (the old data
// put back) by the next Restore or the next start of etcd. So a crash or
// an abandoned restore leaves the old data or the restored data, never a
// mix and never nothing.
func (b *Backend) Restore(ctx context.Context, spec controlplane.Spec, in controlplane.RestoreInput) error {
	if spec.SharedDatastore {
		return fmt.Errorf("%w: %v", controlplane.ErrRestoreRefused, errSharedBackup)
	}
	defer b.lock(spec.Key)()
	if err := b.rollBackSwap(spec.Key); err != nil {
		return err
	}
	l, err := b.ensureLayout(spec)
	if err != nil {
		return err
	}
	if len(l.EtcdPending) > 0 {
		return fmt.Errorf("%w: etcd members are still being added (the cluster is becoming highly available); restore once that is done", controlplane.ErrRestoreRefused)
	}
	p := b.PKI(spec.Key)
	if err := controlplane.CheckRestoreKeys(p, spec.EncryptionProvider, in.Credentials); err != nil {
		return err
	}

	dataDir := filepath.Join(b.Dir(spec.Key), "data")
	staging := filepath.Join(dataDir, "restore-staging")
	if err := os.RemoveAll(staging); err != nil {
		return err
	}
	if err := os.MkdirAll(staging, 0o700); err != nil {
		return err
	}
	var members []controlplane.EtcdMember
	for _, m := range l.etcdMembers() {
		name := fmt.Sprintf("etcd-%d", m)
		members = append(members, controlplane.EtcdMember{Name: name, PeerURL: fmt.Sprintf("https://127.0.0.1:%d", l.EtcdPeer[m]), DataDir: filepath.Join(staging, name)})
	}
	if err := controlplane.RestoreEtcdData(ctx, spec.Binaries.Path("etcdutl"), in.Snapshot, strings.ReplaceAll(spec.Key, "/", "-"), members); err != nil {
		os.RemoveAll(staging)
		return err
	}

	// From here the cluster's data changes: stop everything, then mark
	// the swap as under way before the first rename.
	if err := b.stop(ctx, spec.Key); err != nil {
		return err
	}
	if err := p.MergeEncryptionKeys(spec.EncryptionProvider, in.Credentials, true); err != nil {
		return err
	}
	aside := filepath.Join(dataDir, "before-restore")
	if err := os.RemoveAll(aside); err != nil {
		return err
	}
	if err := os.MkdirAll(aside, 0o700); err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dataDir, restoreMarker), []byte(in.Snapshot+"\n"), 0o600); err != nil {
		return err
	}
	for _, m := range members {
		name := m.Name
		current := filepath.Join(dataDir, name)
		if _, err := os.Stat(current); err == nil {
			if err := os.Rename(current, filepath.Join(aside, name)); err != nil {
				return err
			}
		}
		if err := os.Rename(filepath.Join(staging, name), current); err != nil {
			return err
		}
	}
	syncDir(dataDir)
	// Every member has its restored data: the swap is done.
	if err := os.Remove(filepath.Join(dataDir, restoreMarker)); err != nil {
		return err
	}
	syncDir(dataDir)
	if err := os.RemoveAll(aside); err != nil {
		return err
	}
	return os.RemoveAll(staging)
}

// restoreMarker exists in a control plane's data directory while a
// restore swaps member data directories.
const restoreMarker = "restore-in-progress"

// rollBackSwap undoes a swap a crashed or abandoned restore left half
// done: every member's old data moved aside is put back (a restored copy
// in its place is dropped). Without the marker there is nothing to undo;
// leftovers of a finished swap are removed.
func (b *Backend) rollBackSwap(key string) error {
	dataDir := filepath.Join(b.Dir(key), "data")
	aside := filepath.Join(dataDir, "before-restore")
	if _, err := os.Stat(filepath.Join(dataDir, restoreMarker)); os.IsNotExist(err) {
		if err := os.RemoveAll(aside); err != nil {
			return err
		}
		return os.RemoveAll(filepath.Join(dataDir, "restore-staging"))
	}
	entries, err := os.ReadDir(aside)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	for _, e := range entries {
		current := filepath.Join(dataDir, e.Name())
		if err := os.RemoveAll(current); err != nil {
			return err
		}
		if err := os.Rename(filepath.Join(aside, e.Name()), current); err != nil {
			return err
		}
	}
	syncDir(dataDir)
	if err := os.Remove(filepath.Join(dataDir, restoreMarker)); err != nil {
		return err
	}
	if err := os.RemoveAll(aside); err != nil {
		return err
	}
	return os.RemoveAll(filepath.Join(dataDir, "restore-staging"))
}

// restoreLeftovers reports whether a restore left a marker or data aside.
func (b *Backend) restoreLeftovers(key string) bool {
	dataDir := filepath.Join(b.Dir(key), "data")
	for _, name := range []string{restoreMarker, "before-restore", "restore-staging"} {
		if _, err := os.Stat(filepath.Join(dataDir, name)); err == nil {
			return true
		}
	}
	return false
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
