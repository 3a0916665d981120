package backup

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// DirStore keeps backup files in a directory of the manager's host.
type DirStore struct {
	Dir string
}

var _ Store = DirStore{}

func (d DirStore) path(name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "/\\") || strings.HasPrefix(name, ".") {
		return "", fmt.Errorf("bad backup file name %q", name)
	}
	return filepath.Join(d.Dir, name), nil
}

// Put writes the file under a hidden temporary name, syncs it and renames
// it, so a crash never leaves a partial file under the final name.
func (d DirStore) Put(ctx context.Context, name string, r io.Reader, _ int64) error {
	dst, err := d.path(name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(d.Dir, 0o700); err != nil {
		return fmt.Errorf("backup directory %s: %w", d.Dir, err)
	}
	tmp, err := os.CreateTemp(d.Dir, "."+name+".part-*")
	if err != nil {
		return fmt.Errorf("backup directory %s: %w", d.Dir, err)
	}
	defer os.Remove(tmp.Name())
	_, err = io.Copy(tmp, readerWithContext{ctx, r})
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return err
	}
	if dir, err := os.Open(d.Dir); err == nil {
		dir.Sync()
		dir.Close()
	}
	return nil
}

// Get opens a file.
func (d DirStore) Get(_ context.Context, name string) (io.ReadCloser, error) {
	p, err := d.path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if os.IsNotExist(err) {
		return nil, fmt.Errorf("%w: no %s in %s", ErrNotFound, name, d.Dir)
	}
	return f, err
}

// List returns the files, without temporary ones; a missing directory
// holds nothing.
func (d DirStore) List(context.Context) ([]Object, error) {
	entries, err := os.ReadDir(d.Dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("backup directory %s: %w", d.Dir, err)
	}
	var out []Object
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, Object{Name: e.Name(), Size: info.Size(), Modified: info.ModTime()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Delete removes a file.
func (d DirStore) Delete(_ context.Context, name string) error {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

func (d DirStore) String() string { return d.Dir }

// readerWithContext stops a copy when ctx ends.
type readerWithContext struct {
	ctx context.Context
	r   io.Reader
}

func (r readerWithContext) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
