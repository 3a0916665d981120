package images

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestInputDigests: a remembered digest is reused while its files and
// links are as they were, and computed again after any of them changed.
func TestInputDigests(t *testing.T) {
	tests := []struct {
		name      string
		change    func(t *testing.T, file, link string)
		recompute bool
	}{
		{"nothing changed", func(*testing.T, string, string) {}, false},
		{"file rewritten", func(t *testing.T, file, _ string) {
			if err := os.WriteFile(file, []byte("new content"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"same size, new time", func(t *testing.T, file, _ string) {
			later := time.Now().Add(time.Hour)
			if err := os.Chtimes(file, later, later); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"file replaced (new inode)", func(t *testing.T, file, _ string) {
			fi, _ := os.Stat(file)
			tmp := file + ".new"
			if err := os.WriteFile(tmp, []byte("content"), 0o644); err != nil {
				t.Fatal(err)
			}
			_ = os.Chtimes(tmp, fi.ModTime(), fi.ModTime())
			if err := os.Rename(tmp, file); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"link retargeted", func(t *testing.T, _, link string) {
			if err := os.Remove(link); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("elsewhere", link); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"a file added beside them", func(t *testing.T, file, _ string) {
			later := time.Now().Add(time.Hour)
			if err := os.WriteFile(filepath.Join(filepath.Dir(file), "new-lib"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			_ = os.Chtimes(filepath.Dir(file), later, later) // the same second as before is possible
		}, true},
		{"file gone", func(t *testing.T, file, _ string) {
			if err := os.Remove(file); err != nil {
				t.Fatal(err)
			}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			file, link := filepath.Join(dir, "bin"), filepath.Join(dir, "lib")
			if err := os.WriteFile(file, []byte("content"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("bin", link); err != nil {
				t.Fatal(err)
			}
			var d inputDigests
			hashes := 0
			get := func() string {
				sum, err := d.digest("id",
					func() (*hostTree, error) {
						return &hostTree{files: map[string]bool{file: true}, links: map[string]string{link: "bin"}}, nil
					},
					func(*hostTree) (string, error) { hashes++; return "sum", nil })
				if err != nil {
					t.Fatal(err)
				}
				return sum
			}
			get()
			tt.change(t, file, link)
			get()
			if want := map[bool]int{false: 1, true: 2}[tt.recompute]; hashes != want {
				t.Errorf("hashed %d times, want %d", hashes, want)
			}
		})
	}
}
