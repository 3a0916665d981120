package images

// Host files: programs an image's binary executes (iptables, ipset) taken
// from the host's Debian packages together with everything they load (the
// shared libraries ldd names, the loader, plugin directories), so the image
// runs them exactly as the host does without a distribution inside it.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// hostTree is the closure of some host paths: regular files and symlinks,
// keyed by their absolute path on the host (and in the image).
type hostTree struct {
	files map[string]bool
	links map[string]string // path -> link target as stored on the host
}

// collectHostFiles resolves paths (files, symlinks, directories) into the
// files and symlinks an image needs for them to work: every symlink on the
// way (merged-/usr links like /lib -> usr/lib included), directory
// contents, and the shared libraries of each dynamic ELF file.
func collectHostFiles(ctx context.Context, paths []string) (*hostTree, error) {
	t := &hostTree{files: map[string]bool{}, links: map[string]string{}}
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("host file %q is not an absolute path", p)
		}
		if err := t.add(ctx, p, 0); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (t *hostTree) add(ctx context.Context, p string, depth int) error {
	if depth > 40 {
		return fmt.Errorf("host file %s: too many levels of symbolic links", p)
	}
	parts := strings.Split(strings.TrimPrefix(filepath.Clean(p), "/"), "/")
	cur := "/"
	for i, part := range parts {
		next := filepath.Join(cur, part)
		fi, err := os.Lstat(next)
		if err != nil {
			return fmt.Errorf("host file %s: %w", p, err)
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink(next)
			if err != nil {
				return err
			}
			t.links[next] = target
			resolved := target
			if !filepath.IsAbs(target) {
				resolved = filepath.Join(cur, target)
			}
			return t.add(ctx, filepath.Join(append([]string{resolved}, parts[i+1:]...)...), depth+1)
		}
		cur = next
	}
	fi, err := os.Stat(cur)
	if err != nil {
		return err
	}
	switch {
	case fi.IsDir():
		entries, err := os.ReadDir(cur)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := t.add(ctx, filepath.Join(cur, e.Name()), depth); err != nil {
				return err
			}
		}
		return nil
	case !fi.Mode().IsRegular():
		return fmt.Errorf("host file %s is neither a file, a directory nor a symlink", cur)
	}
	if t.files[cur] {
		return nil
	}
	t.files[cur] = true
	deps, err := sharedLibraries(ctx, cur)
	if err != nil {
		return err
	}
	for _, d := range deps {
		if err := t.add(ctx, d, depth); err != nil {
			return err
		}
	}
	return nil
}

// sharedLibraries lists what the loader loads for a dynamic ELF file (its
// interpreter included), as ldd reports it; nothing for other files.
func sharedLibraries(ctx context.Context, file string) ([]string, error) {
	f, err := elf.Open(file)
	if err != nil {
		return nil, nil // not ELF: a script or data file
	}
	libs, _ := f.ImportedLibraries()
	interp := false
	for _, p := range f.Progs {
		interp = interp || p.Type == elf.PT_INTERP
	}
	f.Close()
	if len(libs) == 0 && !interp {
		return nil, nil // static
	}
	out, err := exec.CommandContext(ctx, "ldd", file).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", file, err)
	}
	var deps []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if _, after, ok := strings.Cut(line, "=> "); ok {
			line = after
		}
		if strings.Contains(line, "not found") {
			return nil, fmt.Errorf("ldd %s: %s", file, sc.Text())
		}
		if fields := strings.Fields(line); len(fields) > 0 && filepath.IsAbs(fields[0]) {
			deps = append(deps, fields[0])
		}
	}
	return deps, nil
}

// digest identifies the tree's content: paths, link targets, file bytes.
func (t *hostTree) digest() (string, error) {
	h := sha256.New()
	for _, p := range t.paths() {
		if target, ok := t.links[p]; ok {
			fmt.Fprintf(h, "L %s %s\n", p, target)
			continue
		}
		sum, err := FileSHA256(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "F %s %s\n", p, sum)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func (t *hostTree) paths() []string {
	var out []string
	for p := range t.files {
		out = append(out, p)
	}
	for p := range t.links {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// writeLayer writes the tree as an uncompressed layer tarball with fixed
// owners and times (same files, same digest).
func (t *hostTree) writeLayer(layerPath string) error {
	out, err := os.Create(layerPath)
	if err != nil {
		return err
	}
	defer out.Close()
	tw := tar.NewWriter(out)
	dirs := map[string]bool{}
	for _, p := range t.paths() {
		rel := strings.TrimPrefix(p, "/")
		var parents []string
		for d := path.Dir(rel); d != "."; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if dirs[d] || t.links["/"+d] != "" {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return err
			}
		}
		if target, ok := t.links[p]; ok {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: rel, Linkname: target, Mode: 0o777, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return err
			}
			continue
		}
		if err := copyIntoTar(tw, p, rel); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return out.Close()
}

func copyIntoTar(tw *tar.Writer, src, rel string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: int64(fi.Mode().Perm()), Size: fi.Size(), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return err
	}
	n, err := io.Copy(tw, f)
	if err == nil && n != fi.Size() {
		err = fmt.Errorf("%s changed size while being read", src)
	}
	return err
}
