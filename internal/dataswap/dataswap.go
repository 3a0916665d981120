// Package dataswap replaces a directory on a volume with a tree streamed
// to it, so that a crash at any point leaves either the old tree or the
// new one, never a mix and never nothing. It serves restores of etcd
// members whose data lives on a seed's persistent volumes: the manager
// prepares each member's data directory and Sends it; a pod that mounts
// the volume Receives it; once every member has its new data the manager
// Commits them all, or, if the restore was abandoned, Rolls them all back.
//
// On the volume, next to the directory (PARENT/NAME):
//
//	restore-staging/   the tree being received
//	before-restore/    the old tree, kept until Commit or Rollback
//	restore-in-progress  marker: "original" if NAME existed before the
//	                   swap began (it is in before-restore or still at
//	                   NAME), "none" if it did not
package dataswap

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Names next to the swapped directory.
const (
	StagingName = "restore-staging"
	AsideName   = "before-restore"
	MarkerName  = "restore-in-progress"
)

const (
	markerOriginal = "original"
	markerNone     = "none"
)

// Send writes the tree under dir to w as a gzip-compressed tar: regular
// files and directories only, with their permission bits. etcd's
// preallocated write-ahead log is mostly zeros, which compress to nearly
// nothing.
func Send(w io.Writer, dir string) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: filepath.ToSlash(rel) + "/", Mode: int64(info.Mode().Perm())})
		case d.Type().IsRegular():
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: filepath.ToSlash(rel), Mode: int64(info.Mode().Perm()), Size: info.Size()}); err != nil {
				return err
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		default:
			return fmt.Errorf("%s: only regular files and directories can be sent", p)
		}
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// Receive reads a tree Send wrote from r and puts it at parent/name,
// keeping what was there in parent/before-restore until Commit or
// Rollback. Nothing at parent/name changes until the whole tree has
// arrived and is on disk, so a truncated or damaged stream changes
// nothing. Receiving again before Commit (a restore tried again) replaces
// the received tree and keeps the original aside.
func Receive(r io.Reader, parent, name string) error {
	staging := filepath.Join(parent, StagingName)
	if err := os.RemoveAll(staging); err != nil {
		return err
	}
	if err := os.MkdirAll(staging, 0o700); err != nil {
		return err
	}
	if err := untar(r, staging); err != nil {
		os.RemoveAll(staging)
		return fmt.Errorf("receiving the data: %w", err)
	}
	syncDir(staging)

	target, aside, marker := filepath.Join(parent, name), filepath.Join(parent, AsideName), filepath.Join(parent, MarkerName)
	state, err := readMarker(marker)
	if err != nil {
		return err
	}
	if state == "" {
		// No swap under way: what is aside is left from one that was
		// committed without its clean-up.
		if err := os.RemoveAll(aside); err != nil {
			return err
		}
		state = markerNone
		if exists(target) {
			state = markerOriginal
		}
		if err := writeSynced(marker, state); err != nil {
			return err
		}
		syncDir(parent)
	}
	switch {
	case state == markerOriginal && !exists(aside):
		// The original is still in place: move it aside.
		if err := os.Rename(target, aside); err != nil {
			return err
		}
	default:
		// What is in place was received by an earlier try.
		if err := os.RemoveAll(target); err != nil {
			return err
		}
	}
	if err := os.Rename(staging, target); err != nil {
		return err
	}
	syncDir(parent)
	return nil
}

// Commit ends a swap: the received tree stays, the original goes.
func Commit(parent string) error {
	if err := os.RemoveAll(filepath.Join(parent, AsideName)); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(parent, StagingName)); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(parent, MarkerName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	syncDir(parent)
	return nil
}

// Rollback ends a swap by putting the original back at parent/name (or
// leaving nothing there if there was nothing before). Without a swap
// under way it changes nothing but leftovers.
func Rollback(parent, name string) error {
	target, aside, marker := filepath.Join(parent, name), filepath.Join(parent, AsideName), filepath.Join(parent, MarkerName)
	state, err := readMarker(marker)
	if err != nil {
		return err
	}
	switch {
	case state == "":
		return Commit(parent) // nothing under way; leftovers only
	case state == markerOriginal && exists(aside):
		if err := os.RemoveAll(target); err != nil {
			return err
		}
		if err := os.Rename(aside, target); err != nil {
			return err
		}
	case state == markerOriginal:
		// Stopped before the original moved: it is still in place.
	default:
		if err := os.RemoveAll(target); err != nil {
			return err
		}
	}
	syncDir(parent)
	return Commit(parent)
}

func readMarker(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	} else if err != nil {
		return "", err
	}
	switch s := strings.TrimSpace(string(b)); s {
	case markerOriginal, markerNone:
		return s, nil
	default:
		return "", fmt.Errorf("%s: unknown state %q", path, s)
	}
}

func untar(r io.Reader, dir string) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		name := path.Clean(h.Name)
		if !fs.ValidPath(name) || name == "." {
			return fmt.Errorf("unsafe name %q in the stream", h.Name)
		}
		dst := filepath.Join(dir, filepath.FromSlash(name))
		mode := os.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, mode|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := writeFile(dst, tr, mode); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: only regular files and directories are received", h.Name)
		}
	}
}

func writeFile(dst string, r io.Reader, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writeSynced writes a small file whole or not at all.
func writeSynced(path, content string) error {
	tmp := path + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := writeFile(tmp, strings.NewReader(content+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
