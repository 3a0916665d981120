package fsutil

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestWriteIfChanged(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "f")
	if err := WriteIfChanged(p, []byte("a"), 0o600); err != nil {
		t.Fatal(err)
	}
	fi1, _ := os.Stat(p)
	time.Sleep(10 * time.Millisecond)
	if err := WriteIfChanged(p, []byte("a"), 0o600); err != nil {
		t.Fatal(err)
	}
	fi2, _ := os.Stat(p)
	if !fi1.ModTime().Equal(fi2.ModTime()) {
		t.Error("unchanged content was rewritten")
	}
	if err := WriteIfChanged(p, []byte("b"), 0o600); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(p); string(data) != "b" {
		t.Errorf("content %q, want b", data)
	}
	if fi2.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi2.Mode().Perm())
	}
	if _, err := os.Stat(p + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Error("temporary file left behind")
	}
}

func TestLockExcludesAndTimesOut(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	unlock, err := Lock(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := Lock(ctx, p); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock: %v, want a deadline error", err)
	}
	unlock()
	unlock2, err := Lock(context.Background(), p)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	unlock2()
}

func TestCopyFileAtomic(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, []byte("content"), 0o640); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Link(src, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, from, to string }{
		{"to a new file", src, filepath.Join(dir, "dst")},
		{"over itself: a hard link becomes a file of its own", link, link},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := CopyFileAtomic(tc.from, tc.to); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(tc.to)
			if err != nil || string(data) != "content" {
				t.Fatalf("copy holds %q, %v", data, err)
			}
			fi, err := os.Stat(tc.to)
			if err != nil || fi.Mode().Perm() != 0o640 {
				t.Fatalf("copy's mode %v, %v; want 0640", fi.Mode().Perm(), err)
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Nlink != 1 {
				t.Errorf("copy has %d links, want 1 (a file of its own)", st.Nlink)
			}
			if _, err := os.Stat(tc.to + ".copy"); !os.IsNotExist(err) {
				t.Errorf("temporary file left behind: %v", err)
			}
		})
	}
}
