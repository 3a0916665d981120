package pki

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Encryption at rest keeps its keys in files beside a small state file,
// encryption-keys.json: the keys in the order the EncryptionConfiguration
// lists them (the first encrypts, all decrypt) and, while a rotation
// runs, which key replaces which. A cluster made before the state file
// existed has one key, "key1", in encryption-key-PROVIDER.

// ErrKeyMismatch marks a backup key that has the name of one of the
// cluster's keys but other bytes: the backup is of another cluster.
var ErrKeyMismatch = errors.New("encryption key differs")

// EncryptionKeysFile is the state file of the encryption keys.
const EncryptionKeysFile = "encryption-keys.json"

// EncryptionKeyFilePrefix starts the name of every encryption key file.
const EncryptionKeyFilePrefix = "encryption-key-"

// EncryptionKey is one key of the configuration.
type EncryptionKey struct {
	// Name is the key's name in the configuration and in every value it
	// encrypted (k8s:enc:PROVIDER:v1:NAME:...).
	Name     string `json:"name"`
	Provider string `json:"provider"`
	// File holds the key (base64), in the PKI directory.
	File string `json:"file"`
}

// EncryptionKeys is the state of a cluster's keys.
type EncryptionKeys struct {
	Keys []EncryptionKey `json:"keys"`
	// Rotating names the key a rotation replaces (From) and its
	// replacement (To) until the old key is dropped.
	Rotating *KeyRotation `json:"rotating,omitempty"`
}

// KeyRotation is a running rotation.
type KeyRotation struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// Rotation stages of the encryption key, each applied by
// RotateEncryptionKey and rolled out to every API server before the next.
const (
	// KeyStageAdd adds a new key that decrypts but does not encrypt yet:
	// every API server must read it before any writes with it.
	KeyStageAdd = "add"
	// KeyStagePromote makes the new key the one that encrypts.
	KeyStagePromote = "promote"
	// KeyStageDrop removes the old key (after every value was rewritten).
	KeyStageDrop = "drop"
)

func checkProvider(provider string) (string, error) {
	switch provider {
	case "":
		return ProviderAESCBC, nil
	case ProviderAESCBC, ProviderAESGCM, ProviderSecretbox:
		return provider, nil
	}
	return "", fmt.Errorf("unknown encryption provider %q (use aescbc, aesgcm or secretbox)", provider)
}

// LoadEncryptionKeys reads the key state; without a state file the
// cluster's first key is the one of provider (created if missing).
func (p ClusterPKI) LoadEncryptionKeys(provider string) (EncryptionKeys, error) {
	var ks EncryptionKeys
	data, err := os.ReadFile(p.Path(EncryptionKeysFile))
	if err == nil {
		if err := json.Unmarshal(data, &ks); err != nil {
			return ks, fmt.Errorf("%s: %w", EncryptionKeysFile, err)
		}
		if len(ks.Keys) == 0 {
			return ks, fmt.Errorf("%s lists no key", EncryptionKeysFile)
		}
		return ks, nil
	}
	if !os.IsNotExist(err) {
		return ks, err
	}
	provider, err = checkProvider(provider)
	if err != nil {
		return ks, err
	}
	// A key file that exists is the key, whatever provider the caller
	// names: a provider changed in the spec before the state file was
	// written must not start a new key that cannot read the old data.
	if existing := p.singleKeyProvider(); existing != "" {
		provider = existing
	}
	k := EncryptionKey{Name: "key1", Provider: provider, File: EncryptionKeyFilePrefix + provider}
	if err := ensureKeyFile(p, k.File); err != nil {
		return ks, err
	}
	ks.Keys = []EncryptionKey{k}
	return ks, nil
}

// singleKeyProvider is the provider of the key file a cluster from before
// the state file has, the one named first if there were several; "" if
// it has none.
func (p ClusterPKI) singleKeyProvider() string {
	for _, prov := range []string{ProviderAESCBC, ProviderAESGCM, ProviderSecretbox} {
		if exists(p.Path(EncryptionKeyFilePrefix + prov)) {
			return prov
		}
	}
	return ""
}

// PrimaryEncryptionProvider is the provider of the key that encrypts, ""
// for a cluster that has no key yet.
func (p ClusterPKI) PrimaryEncryptionProvider() (string, error) {
	data, err := os.ReadFile(p.Path(EncryptionKeysFile))
	if os.IsNotExist(err) {
		return p.singleKeyProvider(), nil
	}
	if err != nil {
		return "", err
	}
	var ks EncryptionKeys
	if err := json.Unmarshal(data, &ks); err != nil {
		return "", fmt.Errorf("%s: %w", EncryptionKeysFile, err)
	}
	if len(ks.Keys) == 0 {
		return "", fmt.Errorf("%s lists no key", EncryptionKeysFile)
	}
	return ks.Keys[0].Provider, nil
}

func (p ClusterPKI) saveEncryptionKeys(ks EncryptionKeys) error {
	data, err := json.MarshalIndent(ks, "", "  ")
	if err != nil {
		return err
	}
	return writeSecretFile(p.Path(EncryptionKeysFile), data)
}

func ensureKeyFile(p ClusterPKI, file string) error {
	if exists(p.Path(file)) {
		return nil
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	return writeSecretFile(p.Path(file), []byte(base64.StdEncoding.EncodeToString(key)))
}

// RotateEncryptionKey applies one stage of a rotation to provider (the
// new key's provider, which may differ from the old one's). Each stage is
// idempotent: applying it again changes nothing.
func (p ClusterPKI) RotateEncryptionKey(stage, provider string) (EncryptionKeys, error) {
	provider, err := checkProvider(provider)
	if err != nil {
		return EncryptionKeys{}, err
	}
	ks, err := p.LoadEncryptionKeys(provider)
	if err != nil {
		return ks, err
	}
	index := func(name string) int {
		return slices.IndexFunc(ks.Keys, func(k EncryptionKey) bool { return k.Name == name })
	}
	switch stage {
	case KeyStageAdd:
		if ks.Rotating != nil {
			return ks, nil
		}
		n := 1
		for _, k := range ks.Keys {
			var i int
			if _, err := fmt.Sscanf(k.Name, "key%d", &i); err == nil && i >= n {
				n = i + 1
			}
		}
		name := fmt.Sprintf("key%d", n)
		k := EncryptionKey{Name: name, Provider: provider, File: fmt.Sprintf("%s%s-%s", EncryptionKeyFilePrefix, provider, name)}
		if err := ensureKeyFile(p, k.File); err != nil {
			return ks, err
		}
		ks.Keys = append(ks.Keys, k)
		ks.Rotating = &KeyRotation{From: ks.Keys[0].Name, To: name}
	case KeyStagePromote:
		if ks.Rotating == nil {
			return ks, fmt.Errorf("no encryption key rotation is running")
		}
		i := index(ks.Rotating.To)
		if i < 0 {
			return ks, fmt.Errorf("the new encryption key %s is missing", ks.Rotating.To)
		}
		k := ks.Keys[i]
		ks.Keys = append([]EncryptionKey{k}, slices.Delete(slices.Clone(ks.Keys), i, i+1)...)
	case KeyStageDrop:
		if ks.Rotating == nil {
			return ks, nil
		}
		// Every value was rewritten with the first key: all others go
		// (the replaced one, and any a restore brought back). The state
		// is saved before the files go, so it never names a missing file.
		dropped := ks.Keys[1:]
		ks.Keys, ks.Rotating = ks.Keys[:1], nil
		if err := p.saveEncryptionKeys(ks); err != nil {
			return ks, err
		}
		for _, k := range dropped {
			if err := os.Remove(p.Path(k.File)); err != nil && !os.IsNotExist(err) {
				return ks, err
			}
		}
		return ks, nil
	default:
		return ks, fmt.Errorf("unknown encryption key rotation stage %q", stage)
	}
	return ks, p.saveEncryptionKeys(ks)
}

// MergeEncryptionKeys adds keys a backup holds that the cluster does not
// (by name) as decrypting keys after its own, so restored data encrypted
// with them reads; a cluster without keys takes the backup's as they are.
// A key the cluster has under the same name with other bytes is an error.
// credentials are the backup's PKI files by name; with apply false it
// only checks.
func (p ClusterPKI) MergeEncryptionKeys(provider string, credentials map[string][]byte, apply bool) error {
	var theirs EncryptionKeys
	if data, ok := credentials[EncryptionKeysFile]; ok {
		if err := json.Unmarshal(data, &theirs); err != nil {
			return fmt.Errorf("the backup's %s: %w", EncryptionKeysFile, err)
		}
	} else {
		// A backup from before the state file: its one key.
		for name := range credentials {
			if prov, ok := strings.CutPrefix(name, EncryptionKeyFilePrefix); ok && !strings.Contains(prov, "-") {
				theirs.Keys = append(theirs.Keys, EncryptionKey{Name: "key1", Provider: prov, File: name})
			}
		}
	}
	_, stateErr := os.Stat(p.Path(EncryptionKeysFile))
	fresh := os.IsNotExist(stateErr) && p.singleKeyProvider() == ""
	ours := EncryptionKeys{}
	if !fresh {
		var err error
		if ours, err = p.LoadEncryptionKeys(provider); err != nil {
			return err
		}
	}
	for _, k := range theirs.Keys {
		data, ok := credentials[k.File]
		if !ok {
			return fmt.Errorf("the backup lacks the key file %s of key %s", k.File, k.Name)
		}
		i := slices.IndexFunc(ours.Keys, func(o EncryptionKey) bool { return o.Name == k.Name })
		if i >= 0 {
			mine, err := os.ReadFile(p.Path(ours.Keys[i].File))
			if err != nil {
				return err
			}
			if strings.TrimSpace(string(mine)) != strings.TrimSpace(string(data)) || ours.Keys[i].Provider != k.Provider {
				return fmt.Errorf("%w: the snapshot's encryption key %s differs from the cluster's", ErrKeyMismatch, k.Name)
			}
			continue
		}
		if exists(p.Path(k.File)) {
			mine, _ := os.ReadFile(p.Path(k.File))
			if strings.TrimSpace(string(mine)) != strings.TrimSpace(string(data)) {
				return fmt.Errorf("%w: the snapshot's key file %s differs from the cluster's", ErrKeyMismatch, k.File)
			}
		} else if apply {
			if err := writeSecretFile(p.Path(k.File), data); err != nil {
				return err
			}
		}
		ours.Keys = append(ours.Keys, k)
	}
	if len(ours.Keys) == 0 || !apply {
		return nil
	}
	return p.saveEncryptionKeys(ours)
}

// ensureEncryptionConfig renders the EncryptionConfiguration from the key
// state and the resource list, so a change of resources never changes a key.
func ensureEncryptionConfig(p ClusterPKI, provider string, resources []string) error {
	ks, err := p.LoadEncryptionKeys(provider)
	if err != nil {
		return err
	}
	if _, err := os.Stat(p.Path(EncryptionKeysFile)); os.IsNotExist(err) {
		if err := p.saveEncryptionKeys(ks); err != nil {
			return err
		}
	}
	secrets := make([]string, len(ks.Keys))
	for i, k := range ks.Keys {
		data, err := os.ReadFile(p.Path(k.File))
		if err != nil {
			return fmt.Errorf("encryption key %s: %w", k.Name, err)
		}
		secrets[i] = strings.TrimSpace(string(data))
	}
	return writeSecretFile(p.Path(EncryptionConfigFile), []byte(RenderEncryptionKeys(ks.Keys, secrets, resources)))
}

// RenderEncryptionConfig renders an EncryptionConfiguration that encrypts
// secrets and the given resources with one key ("key1") and still reads
// plain data (identity last), so enabling encryption never makes old
// objects unreadable.
func RenderEncryptionConfig(provider, base64Key string, resources []string) string {
	return RenderEncryptionKeys([]EncryptionKey{{Name: "key1", Provider: provider}}, []string{base64Key}, resources)
}

// RenderEncryptionKeys renders the configuration of keys (the first
// encrypts) with their secrets, identity last.
func RenderEncryptionKeys(keys []EncryptionKey, secrets []string, resources []string) string {
	all := []string{"secrets"}
	seen := map[string]bool{"secrets": true}
	for _, r := range resources {
		if !seen[r] {
			seen[r] = true
			all = append(all, r)
		}
	}
	var sb strings.Builder
	sb.WriteString("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources:\n")
	for _, r := range all {
		fmt.Fprintf(&sb, "      - %s\n", r)
	}
	sb.WriteString("    providers:\n")
	for i, k := range keys {
		fmt.Fprintf(&sb, "      - %s:\n          keys:\n            - name: %s\n              secret: %s\n", k.Provider, k.Name, secrets[i])
	}
	sb.WriteString("      - identity: {}\n")
	return sb.String()
}
