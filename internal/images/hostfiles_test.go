package images

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestCollectHostFiles(t *testing.T) {
	// A tree of our own: a symlinked directory, a symlink chain, a plain
	// file, and a dynamic ELF program of the host (its libraries and its
	// loader must come along).
	dir := t.TempDir()
	real := filepath.Join(dir, "usr", "sbin")
	if err := os.MkdirAll(real, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("usr/sbin", filepath.Join(dir, "sbin")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(real, "tool"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("tool", filepath.Join(real, "tool-alias")); err != nil {
		t.Fatal(err)
	}
	sh, err := filepath.EvalSymlinks("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	tree, err := collectHostFiles(context.Background(), []string{filepath.Join(dir, "sbin", "tool-alias"), sh})
	if err != nil {
		t.Fatal(err)
	}
	if tree.links[filepath.Join(dir, "sbin")] != "usr/sbin" || tree.links[filepath.Join(real, "tool-alias")] != "tool" {
		t.Errorf("links %v", tree.links)
	}
	if !tree.files[filepath.Join(real, "tool")] || !tree.files[sh] {
		t.Errorf("files %v", tree.files)
	}
	var libc, loader bool
	for p := range tree.files {
		switch filepath.Base(p) {
		case "libc.so.6":
			libc = true
		case "ld-linux-x86-64.so.2":
			loader = true
		}
	}
	if !libc || !loader {
		t.Errorf("the shell's libc (%t) or loader (%t) is missing: %v", libc, loader, tree.files)
	}

	d1, err := tree.digest()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(real, "tool"), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if d2, _ := tree.digest(); d2 == d1 {
		t.Error("the digest did not change with a file's content")
	}

	layer := filepath.Join(t.TempDir(), "layer.tar")
	if err := tree.writeLayer(layer); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(layer)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entries := map[string]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		entries[h.Name] = h.Typeflag
	}
	rel := func(p string) string { return p[1:] }
	if entries[rel(filepath.Join(dir, "sbin"))] != tar.TypeSymlink || entries[rel(filepath.Join(real, "tool"))] != tar.TypeReg ||
		entries[rel(real)+"/"] != tar.TypeDir {
		t.Errorf("layer entries %v", entries)
	}

	if _, err := collectHostFiles(context.Background(), []string{"relative/path"}); err == nil {
		t.Error("a relative host path was accepted")
	}
	if _, err := collectHostFiles(context.Background(), []string{filepath.Join(dir, "missing")}); err == nil {
		t.Error("a missing host path was accepted")
	}
}
