package pki

import (
	"bytes"
	"fmt"
	"os"
)

// Service-account key files of a rotation: the next key is made first and
// only verifies; promoted, it signs and the replaced key's public half
// verifies as the previous one until the rotation completes.
const (
	NextServiceAccountName     = "sa-next"
	PreviousServiceAccountName = "sa-previous"
)

// Rotation stages of the service-account key.
const (
	// SAKeyStageAdd makes a new key that every API server accepts before
	// any of them signs with it (the old key still signs).
	SAKeyStageAdd = "add"
	// SAKeyStagePromote makes the new key the signing one; the old public
	// key still verifies.
	SAKeyStagePromote = "promote"
	// SAKeyStageDrop removes the old key: its tokens stop working.
	SAKeyStageDrop = "drop"
)

// RotateServiceAccountKey applies one stage of a service-account key
// rotation. Every stage is idempotent and survives a crash at any point.
func (p ClusterPKI) RotateServiceAccountKey(stage string) error {
	nextKey, nextPub := p.Key(NextServiceAccountName), p.Path(NextServiceAccountName+".pub")
	curKey, curPub := p.Key(ServiceAccountName), p.Path(ServiceAccountName+".pub")
	prevPub := p.Path(PreviousServiceAccountName + ".pub")
	switch stage {
	case SAKeyStageAdd:
		if exists(nextKey) && exists(nextPub) {
			return nil
		}
		return ensureServiceAccountKeyAt(nextKey, nextPub)
	case SAKeyStagePromote:
		if !exists(nextKey) || !exists(nextPub) {
			return nil // promoted already (or never added: nothing to do)
		}
		next, err := os.ReadFile(nextPub)
		if err != nil {
			return err
		}
		cur, err := os.ReadFile(curPub)
		if err != nil {
			return err
		}
		// The public key is written last: while it is still the old one,
		// it is the one to keep as the previous key.
		if !bytes.Equal(cur, next) {
			if err := writeSecretFile(prevPub, cur); err != nil {
				return err
			}
		}
		key, err := os.ReadFile(nextKey)
		if err != nil {
			return err
		}
		if err := writeSecretFile(curKey, key); err != nil {
			return err
		}
		if err := writeSecretFile(curPub, next); err != nil {
			return err
		}
		for _, f := range []string{nextKey, nextPub} {
			if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
				return err
			}
		}
		return nil
	case SAKeyStageDrop:
		for _, f := range []string{prevPub, p.Key(PreviousServiceAccountName)} {
			if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unknown service-account key rotation stage %q", stage)
}

// ServiceAccountVerifyKeys are the public keys that verify tokens: the
// current one and, during a rotation, the next or the previous one.
func (p ClusterPKI) ServiceAccountVerifyKeys() []string {
	keys := []string{p.Path(ServiceAccountName + ".pub")}
	for _, name := range []string{NextServiceAccountName, PreviousServiceAccountName} {
		if f := p.Path(name + ".pub"); exists(f) {
			keys = append(keys, f)
		}
	}
	return keys
}
