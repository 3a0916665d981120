package pki

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func newTestPKI(t *testing.T) ClusterPKI {
	t.Helper()
	p, err := EnsureCluster(t.TempDir(), ClusterParams{Name: "c1", ServiceCIDR: "10.96.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func keyNames(ks EncryptionKeys) string {
	var out []string
	for _, k := range ks.Keys {
		out = append(out, k.Name)
	}
	return strings.Join(out, ",")
}

// TestRotateEncryptionKey: add, promote and drop, each applied twice,
// change the order of keys in the configuration as the steps require.
func TestRotateEncryptionKey(t *testing.T) {
	p := newTestPKI(t)
	key1, _ := os.ReadFile(p.Path("encryption-key-aescbc"))
	steps := []struct {
		stage, provider string
		want            string // key names, the encrypting one first
		rotating        bool
	}{
		{KeyStageAdd, "aescbc", "key1,key2", true},
		{KeyStageAdd, "aescbc", "key1,key2", true}, // again: nothing changes
		{KeyStagePromote, "aescbc", "key2,key1", true},
		{KeyStagePromote, "aescbc", "key2,key1", true},
		{KeyStageDrop, "aescbc", "key2", false},
		{KeyStageDrop, "aescbc", "key2", false},
		{KeyStageAdd, "secretbox", "key2,key3", true}, // a new provider through rotation
		{KeyStagePromote, "secretbox", "key3,key2", true},
	}
	for i, s := range steps {
		ks, err := p.RotateEncryptionKey(s.stage, s.provider)
		if err != nil {
			t.Fatalf("step %d (%s): %v", i, s.stage, err)
		}
		if keyNames(ks) != s.want || (ks.Rotating != nil) != s.rotating {
			t.Errorf("step %d (%s): keys %s rotating %v, want %s %v", i, s.stage, keyNames(ks), ks.Rotating, s.want, s.rotating)
		}
		if err := ensureEncryptionConfig(p, "aescbc", nil); err != nil {
			t.Fatal(err)
		}
		cfg, _ := os.ReadFile(p.Path(EncryptionConfigFile))
		first := strings.Index(string(cfg), "name: "+strings.Split(s.want, ",")[0])
		for _, n := range strings.Split(s.want, ",")[1:] {
			if j := strings.Index(string(cfg), "name: "+n); j < first {
				t.Errorf("step %d: %s is not after the encrypting key in\n%s", i, n, cfg)
			}
		}
	}
	if _, err := os.Stat(p.Path("encryption-key-aescbc")); !os.IsNotExist(err) {
		t.Error("the dropped key's file is still there")
	}
	cfg, _ := os.ReadFile(p.Path(EncryptionConfigFile))
	if bytes.Contains(cfg, bytes.TrimSpace(key1)) {
		t.Error("the dropped key is still in the configuration")
	}
	if !strings.Contains(string(cfg), "- secretbox:") {
		t.Errorf("the new provider is not in the configuration:\n%s", cfg)
	}
}

// TestRotateServiceAccountKey: add makes a next key that only verifies;
// promote makes it sign and keeps the old public key as the previous one;
// drop removes that. Each stage applied twice changes nothing more, and a
// crash in the middle of promote is finished by the next run.
func TestRotateServiceAccountKey(t *testing.T) {
	read := func(p ClusterPKI, name string) []byte { b, _ := os.ReadFile(p.Path(name)); return b }
	p := newTestPKI(t)
	old := read(p, "sa.pub")
	for range 2 {
		if err := p.RotateServiceAccountKey(SAKeyStageAdd); err != nil {
			t.Fatal(err)
		}
	}
	next := read(p, NextServiceAccountName+".pub")
	if !bytes.Equal(read(p, "sa.pub"), old) || len(next) == 0 || bytes.Equal(next, old) {
		t.Fatal("add changed the signing key or made no next key")
	}
	if got := p.ServiceAccountVerifyKeys(); len(got) != 2 {
		t.Errorf("verify keys after add: %v, want current and next", got)
	}
	for range 2 {
		if err := p.RotateServiceAccountKey(SAKeyStagePromote); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(read(p, "sa.pub"), next) || !bytes.Equal(read(p, PreviousServiceAccountName+".pub"), old) {
		t.Fatal("promote did not make the next key sign and keep the old one as previous")
	}
	if got := p.ServiceAccountVerifyKeys(); len(got) != 2 {
		t.Errorf("verify keys after promote: %v, want current and previous", got)
	}
	if err := p.RotateServiceAccountKey(SAKeyStageDrop); err != nil {
		t.Fatal(err)
	}
	if got := p.ServiceAccountVerifyKeys(); len(got) != 1 {
		t.Errorf("verify keys after drop: %v", got)
	}

	// A crash in promote after the new private key was written, before
	// the public one: the next run keeps the old public key as previous.
	q := newTestPKI(t)
	qOld := read(q, "sa.pub")
	if err := q.RotateServiceAccountKey(SAKeyStageAdd); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(q.Key("sa"), read(q, NextServiceAccountName+".key"), 0o600)
	if err := q.RotateServiceAccountKey(SAKeyStagePromote); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(read(q, PreviousServiceAccountName+".pub"), qOld) {
		t.Error("after a crash in promote the old public key was not kept")
	}
}

// TestMergeEncryptionKeys: a backup's keys join a rotated cluster's as
// decrypting keys; a fresh cluster takes them in their order; a key with
// the same name and other bytes is refused, and a check changes nothing.
func TestMergeEncryptionKeys(t *testing.T) {
	src := newTestPKI(t)
	creds := map[string][]byte{}
	read := func(p ClusterPKI, name string) []byte { b, _ := os.ReadFile(p.Path(name)); return b }
	creds[EncryptionKeysFile] = read(src, EncryptionKeysFile)
	creds["encryption-key-aescbc"] = read(src, "encryption-key-aescbc")

	// The same cluster after a completed rotation: key1 comes back behind key2.
	rotated := ClusterPKI{Dir: t.TempDir()}
	for name, data := range creds {
		os.WriteFile(rotated.Path(name), data, 0o600)
	}
	for _, stage := range []string{KeyStageAdd, KeyStagePromote, KeyStageDrop} {
		if _, err := rotated.RotateEncryptionKey(stage, "aescbc"); err != nil {
			t.Fatal(err)
		}
	}
	if err := rotated.MergeEncryptionKeys("aescbc", creds, true); err != nil {
		t.Fatal(err)
	}
	if ks, _ := rotated.LoadEncryptionKeys("aescbc"); keyNames(ks) != "key2,key1" {
		t.Errorf("after the merge: %s, want key2,key1", keyNames(ks))
	}

	fresh := ClusterPKI{Dir: t.TempDir()}
	if err := fresh.MergeEncryptionKeys("aescbc", creds, true); err != nil {
		t.Fatal(err)
	}
	if ks, _ := fresh.LoadEncryptionKeys("aescbc"); keyNames(ks) != "key1" || !bytes.Equal(read(fresh, "encryption-key-aescbc"), creds["encryption-key-aescbc"]) {
		t.Errorf("a fresh cluster took %s", keyNames(ks))
	}

	other := newTestPKI(t)
	before := read(other, EncryptionKeysFile)
	if err := other.MergeEncryptionKeys("aescbc", creds, false); err == nil || !strings.Contains(err.Error(), "differs") {
		t.Errorf("another cluster's key1: %v", err)
	}
	if !bytes.Equal(read(other, EncryptionKeysFile), before) {
		t.Error("a check changed the key state")
	}
}
