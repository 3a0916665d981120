package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/lotse/lotse/internal/gobuild"
	"github.com/lotse/lotse/internal/pki"
)

// restoreRevisionBump is how far a restore moves etcd's revision past the
// snapshot's: beyond any revision a client saw before, so no watch or
// cache mistakes restored data for data it already has (the figure
// upstream's etcd recovery guide uses). The snapshot's revisions are also
// marked compacted, so clients list again instead of resuming a watch.
const restoreRevisionBump = "1000000000"

// EtcdMember is one member of an etcd cluster made from a snapshot.
type EtcdMember struct {
	Name, PeerURL string
	// DataDir is where the member's restored data directory is written.
	DataDir string
}

// RestoreEtcdData writes a data directory for every member from the same
// snapshot, with the cluster's member list, token and bumped revisions
// (etcdutl snapshot restore). A snapshot etcdutl cannot restore is an
// ErrRestoreRefused.
func RestoreEtcdData(ctx context.Context, etcdutl, snapshot, token string, members []EtcdMember) error {
	var initial []string
	for _, m := range members {
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	for _, m := range members {
		cmd := gobuild.Command(ctx, etcdutl, "snapshot", "restore", snapshot,
			"--name="+m.Name, "--data-dir="+m.DataDir,
			"--initial-cluster="+strings.Join(initial, ","),
			"--initial-cluster-token="+token,
			"--initial-advertise-peer-urls="+m.PeerURL,
			"--bump-revision="+restoreRevisionBump, "--mark-compacted")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%w: etcdutl snapshot restore: %v: %s", ErrRestoreRefused, err, bytes.TrimSpace(out))
		}
	}
	return nil
}

// CheckRestoreKeys checks, changing nothing, that a backup's encryption
// keys can join the cluster's: a key the cluster has under the same name
// with other bytes is an ErrRestoreRefused.
func CheckRestoreKeys(p pki.ClusterPKI, provider string, credentials map[string][]byte) error {
	if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		return err
	}
	err := p.MergeEncryptionKeys(provider, credentials, false)
	if errors.Is(err, pki.ErrKeyMismatch) {
		return fmt.Errorf("%w: %v; restore it into a new cluster instead", ErrRestoreRefused, err)
	}
	return err
}
