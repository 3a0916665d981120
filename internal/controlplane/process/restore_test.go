package process

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRollBackSwap: a swap that a crash stopped half-way is undone (the
// old data back in place, whatever was restored dropped); a finished one
// only loses its leftovers.
func TestRollBackSwap(t *testing.T) {
	write := func(path, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	read := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			return "missing"
		}
		return string(b)
	}
	tests := []struct {
		name   string
		marker bool
		// before: files relative to the data directory
		before map[string]string
		// want: etcd-N/db contents afterwards
		want map[string]string
	}{
		{"crash after moving member 0 aside, before its restored copy",
			true, map[string]string{"before-restore/etcd-0/db": "old0", "etcd-1/db": "old1", "restore-staging/etcd-0/db": "new0", "restore-staging/etcd-1/db": "new1"},
			map[string]string{"etcd-0": "old0", "etcd-1": "old1"}},
		{"crash after member 0 was swapped",
			true, map[string]string{"before-restore/etcd-0/db": "old0", "etcd-0/db": "new0", "etcd-1/db": "old1"},
			map[string]string{"etcd-0": "old0", "etcd-1": "old1"}},
		{"crash after every member was swapped, before the marker went",
			true, map[string]string{"before-restore/etcd-0/db": "old0", "etcd-0/db": "new0"},
			map[string]string{"etcd-0": "old0"}},
		{"a finished swap's leftovers",
			false, map[string]string{"before-restore/etcd-0/db": "old0", "etcd-0/db": "new0"},
			map[string]string{"etcd-0": "new0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &Backend{StateDir: t.TempDir()}
			key := "cluster/ns/c1"
			data := filepath.Join(b.Dir(key), "data")
			for path, content := range tt.before {
				write(filepath.Join(data, path), content)
			}
			if tt.marker {
				write(filepath.Join(data, restoreMarker), "snap")
			}
			if !b.restoreLeftovers(key) {
				t.Fatal("leftovers not seen")
			}
			if err := b.rollBackSwap(key); err != nil {
				t.Fatal(err)
			}
			for member, want := range tt.want {
				if got := read(filepath.Join(data, member, "db")); got != want {
					t.Errorf("%s: %q, want %q", member, got, want)
				}
			}
			if b.restoreLeftovers(key) {
				t.Error("leftovers remain after the roll-back")
			}
		})
	}
}
