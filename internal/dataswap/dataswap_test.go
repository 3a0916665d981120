package dataswap

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tree makes a directory with the given files (relative path -> content).
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func stream(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Send(&buf, tree(t, files)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// read returns the files under dir; nil if dir does not exist.
func read(t *testing.T, dir string) map[string]string {
	t.Helper()
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		return nil
	}
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func same(a, b map[string]string) bool {
	if (a == nil) != (b == nil) || len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestSwap(t *testing.T) {
	original := map[string]string{"member/snap/db": "old", "member/wal/0.wal": "old wal"}
	restored := map[string]string{"member/snap/db": "new", "member/wal/0.wal": strings.Repeat("\x00", 1<<20)}
	retried := map[string]string{"member/snap/db": "newer"}
	cases := []struct {
		name     string
		original map[string]string // nil: no directory before
		// steps: "receive", "receive-again", "commit", "rollback", "truncated",
		// "crash-after-marker" (a swap stopped after its marker was written)
		steps []string
		want  map[string]string
	}{
		{"received, then committed", original, []string{"receive", "commit"}, restored},
		{"received, then rolled back", original, []string{"receive", "rollback"}, original},
		{"tried again, then rolled back: the original comes back", original, []string{"receive", "receive-again", "rollback"}, original},
		{"tried again, then committed", original, []string{"receive", "receive-again", "commit"}, retried},
		{"nothing before, received, rolled back: nothing again", nil, []string{"receive", "rollback"}, nil},
		{"nothing before, received, committed", nil, []string{"receive", "commit"}, restored},
		{"a truncated stream changes nothing", original, []string{"truncated"}, original},
		{"a truncated retry keeps the first try", original, []string{"receive", "truncated"}, restored},
		{"stopped after the marker, rolled back", original, []string{"crash-after-marker", "rollback"}, original},
		{"stopped after the marker, received again", original, []string{"crash-after-marker", "receive", "rollback"}, original},
		{"a second restore after a commit keeps the newer original", original, []string{"receive", "commit", "receive-again", "rollback"}, restored},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			target := filepath.Join(parent, "data")
			if tc.original != nil {
				src := tree(t, tc.original)
				if err := os.Rename(src, target); err != nil {
					t.Fatal(err)
				}
			}
			for _, step := range tc.steps {
				var err error
				switch step {
				case "receive":
					err = Receive(bytes.NewReader(stream(t, restored)), parent, "data")
				case "receive-again":
					err = Receive(bytes.NewReader(stream(t, retried)), parent, "data")
				case "truncated":
					s := stream(t, retried)
					if err := Receive(bytes.NewReader(s[:len(s)/2]), parent, "data"); err == nil {
						t.Fatal("a truncated stream was received")
					}
				case "crash-after-marker":
					err = writeSynced(filepath.Join(parent, MarkerName), markerOriginal)
				case "commit":
					err = Commit(parent)
				case "rollback":
					err = Rollback(parent, "data")
				}
				if err != nil {
					t.Fatalf("%s: %v", step, err)
				}
			}
			if got := read(t, target); !same(got, tc.want) {
				t.Errorf("data after %v: %d files %v, want %d files", tc.steps, len(got), keys(got), len(tc.want))
			}
			last := tc.steps[len(tc.steps)-1]
			if last == "commit" || last == "rollback" {
				for _, name := range []string{AsideName, StagingName, MarkerName} {
					if _, err := os.Stat(filepath.Join(parent, name)); err == nil {
						t.Errorf("%s left after %s", name, last)
					}
				}
			}
		})
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestReceiveRefusesUnsafeNames: a stream cannot write outside its
// directory or make links.
func TestReceiveRefusesUnsafeNames(t *testing.T) {
	for _, h := range []tar.Header{
		{Name: "../escape", Typeflag: tar.TypeReg, Mode: 0o600},
		{Name: "/abs", Typeflag: tar.TypeReg, Mode: 0o600},
		{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"},
	} {
		t.Run(h.Name, func(t *testing.T) {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			tw := tar.NewWriter(zw)
			if err := tw.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
			tw.Close()
			zw.Close()
			parent := t.TempDir()
			if err := Receive(&buf, parent, "data"); err == nil {
				t.Fatal("received")
			}
			if entries, _ := os.ReadDir(parent); len(entries) != 0 {
				t.Errorf("left behind: %v", entries)
			}
		})
	}
}
