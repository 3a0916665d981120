package backup

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// sealedBackup writes a backup of an etcd file of size bytes.
func sealedBackup(t *testing.T, key []byte, size int) ([]byte, []byte) {
	t.Helper()
	etcd := make([]byte, size)
	if _, err := rand.Read(etcd); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "etcd.db")
	if err := os.WriteFile(path, etcd, 0o600); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	m := Manifest{Namespace: "ns", Name: "c1", UID: "u1", KubernetesVersion: "1.37.2", Created: time.Unix(1_800_000_000, 0).UTC()}
	creds := map[string][]byte{"ca.crt": []byte("cert"), "encryption-key-aescbc": []byte("key")}
	if err := Write(&buf, key, m, path, creds); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), etcd
}

func TestRoundTrip(t *testing.T) {
	key := testKey(t)
	for _, size := range []int{0, 1, chunkSize - 1, 3*chunkSize + 17} {
		sealed, etcd := sealedBackup(t, key, size)
		c, err := Read(bytes.NewReader(sealed), key, t.TempDir())
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		got, err := os.ReadFile(c.EtcdSnapshot)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, etcd) {
			t.Errorf("size %d: etcd snapshot differs after the round trip", size)
		}
		if c.Manifest.Name != "c1" || c.Manifest.UID != "u1" || c.Manifest.EtcdSize != int64(size) {
			t.Errorf("manifest: %+v", c.Manifest)
		}
		if string(c.Credentials["encryption-key-aescbc"]) != "key" || string(c.Credentials["ca.crt"]) != "cert" {
			t.Errorf("credentials: %v", c.Credentials)
		}
		if bytes.Contains(sealed, []byte("encryption-key-aescbc")) {
			t.Error("the sealed file shows a credential's name in plain text")
		}
	}
}

func TestReadRefusesDamage(t *testing.T) {
	key := testKey(t)
	sealed, _ := sealedBackup(t, key, 2*chunkSize+100)
	flip := func(at int) []byte {
		b := bytes.Clone(sealed)
		b[at] ^= 0x40
		return b
	}
	tests := []struct {
		name    string
		data    []byte
		key     []byte
		corrupt bool   // errors.Is ErrCorrupt
		message string // part of the error
	}{
		{"empty", nil, key, true, "no header"},
		{"not a backup", []byte(strings.Repeat("x", 100)), key, true, "not a Lotse backup"},
		{"cut in the header", sealed[:10], key, true, "no header"},
		{"cut after the first frame", sealed[:headerLen+5+1000], key, true, "cut short"},
		{"cut before the final frame", sealed[:len(sealed)-40], key, true, ""},
		{"cut by one byte", sealed[:len(sealed)-1], key, true, "cut short"},
		{"a byte flipped in the data", flip(len(sealed) / 2), key, true, "does not authenticate"},
		{"a byte flipped in the header's nonce", flip(headerLen - 1), key, true, "does not authenticate"},
		{"data appended", append(bytes.Clone(sealed), 0), key, true, "after the final frame"},
		{"another key", sealed, testKey(t), false, "encrypted with backup key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := Read(bytes.NewReader(tt.data), tt.key, dir)
			if err == nil {
				t.Fatal("a damaged backup was read")
			}
			if errors.Is(err, ErrCorrupt) != tt.corrupt {
				t.Errorf("errors.Is(ErrCorrupt) = %v, want %v: %v", !tt.corrupt, tt.corrupt, err)
			}
			if !strings.Contains(err.Error(), tt.message) {
				t.Errorf("error %q does not say %q", err, tt.message)
			}
		})
	}
}

func TestDirStoreAndPrune(t *testing.T) {
	ctx := context.Background()
	s := DirStore{Dir: filepath.Join(t.TempDir(), "ns", "c1")}
	if list, err := List(ctx, s); err != nil || len(list) != 0 {
		t.Fatalf("a missing directory lists %v, %v", list, err)
	}
	base := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for i := range 5 {
		name := FileName(SnapshotName(base.Add(time.Duration(i) * time.Hour)))
		if err := s.Put(ctx, name, strings.NewReader("data"), -1); err != nil {
			t.Fatal(err)
		}
	}
	// Neither temporary files nor foreign ones count as snapshots.
	os.WriteFile(filepath.Join(s.Dir, ".x.part-1"), nil, 0o600)
	os.WriteFile(filepath.Join(s.Dir, "notes.txt"), nil, 0o600)
	deleted, err := Prune(ctx, s, 2)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"20261201T100000Z", "20261201T110000Z", "20261201T120000Z"}; strings.Join(deleted, ",") != strings.Join(want, ",") {
		t.Errorf("pruned %v, want %v", deleted, want)
	}
	list, _ := List(ctx, s)
	if len(list) != 2 || list[0].Name != "20261201T130000Z" || list[1].Size != 4 {
		t.Errorf("left %+v", list)
	}
	if _, err := s.Get(ctx, FileName("20261201T100000Z")); !errors.Is(err, ErrNotFound) {
		t.Errorf("get of a pruned snapshot: %v", err)
	}
	if err := s.Delete(ctx, "missing"+extension); err != nil {
		t.Errorf("delete of a missing file: %v", err)
	}
	if err := s.Put(ctx, "../escape", strings.NewReader(""), 0); err == nil {
		t.Error("a name with a slash was stored")
	}
	r, err := s.Get(ctx, FileName("20261201T140000Z"))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(r)
	r.Close()
	if string(data) != "data" {
		t.Errorf("read %q", data)
	}
}

func TestSnapshotNames(t *testing.T) {
	taken := time.Date(2026, 12, 1, 18, 30, 5, 0, time.FixedZone("x", 3600))
	name, got, ok := ParseFileName(FileName(SnapshotName(taken)))
	if !ok || name != "20261201T173005Z" || !got.Equal(taken) {
		t.Errorf("%q %v %v", name, got, ok)
	}
	for _, bad := range []string{"", "latest", "20261201T173005Z.lotse-backup", "../20261201T173005Z"} {
		if CheckSnapshotName(bad) == nil {
			t.Errorf("%q accepted as a snapshot name", bad)
		}
	}
}

// failingReader fails after n bytes, like a connection reset.
type failingReader struct {
	data []byte
	n    int
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("connection reset by peer")
	}
	k := copy(p, f.data[:min(len(p), f.n, len(f.data))])
	f.data, f.n = f.data[k:], f.n-k
	return k, nil
}

func TestReadTransportErrorIsNotCorruption(t *testing.T) {
	key := testKey(t)
	sealed, _ := sealedBackup(t, key, 3*chunkSize)
	_, err := Read(&failingReader{data: sealed, n: len(sealed) / 2}, key, t.TempDir())
	if err == nil || errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "connection reset") {
		t.Errorf("a failed read: %v, want the read error, not corruption", err)
	}
}
