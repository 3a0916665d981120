package pki

import (
	"bytes"
	"fmt"
	"os"
)

// PreviousServiceAccountName holds the service-account key a rotation
// replaced: its public half still verifies tokens until the rotation
// completes.
const PreviousServiceAccountName = "sa-previous"

// Rotation stages of the service-account key.
const (
	// SAKeyStageAdd keeps the current key as the previous one and makes a
	// new one that signs.
	SAKeyStageAdd = "add"
	// SAKeyStageDrop removes the previous key: its tokens stop working.
	SAKeyStageDrop = "drop"
)

// RotateServiceAccountKey applies one stage of a service-account key
// rotation. Both stages are idempotent and survive a crash at any point:
// the previous key is copied before the new one is written, and a new key
// is made only while the current one still equals the previous.
func (p ClusterPKI) RotateServiceAccountKey(stage string) error {
	prevKey, prevPub := p.Key(PreviousServiceAccountName), p.Path(PreviousServiceAccountName+".pub")
	curKey, curPub := p.Key(ServiceAccountName), p.Path(ServiceAccountName+".pub")
	switch stage {
	case SAKeyStageAdd:
		if !exists(prevKey) || !exists(prevPub) {
			for _, f := range [][2]string{{curPub, prevPub}, {curKey, prevKey}} {
				data, err := os.ReadFile(f[0])
				if err != nil {
					return err
				}
				if err := writeSecretFile(f[1], data); err != nil {
					return err
				}
			}
		}
		cur, err := os.ReadFile(curPub)
		if err != nil && !os.IsNotExist(err) {
			return err
		}
		prev, err := os.ReadFile(prevPub)
		if err != nil {
			return err
		}
		if err == nil && cur != nil && !bytes.Equal(cur, prev) {
			return nil // the new key is in place
		}
		if err := os.Remove(curKey); err != nil && !os.IsNotExist(err) {
			return err
		}
		return ensureServiceAccountKey(p)
	case SAKeyStageDrop:
		for _, f := range []string{prevKey, prevPub} {
			if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unknown service-account key rotation stage %q", stage)
}

// ServiceAccountVerifyKeys are the public keys that verify tokens: the
// current one and, during a rotation, the previous one.
func (p ClusterPKI) ServiceAccountVerifyKeys() []string {
	keys := []string{p.Path(ServiceAccountName + ".pub")}
	if prev := p.Path(PreviousServiceAccountName + ".pub"); exists(prev) {
		keys = append(keys, prev)
	}
	return keys
}
