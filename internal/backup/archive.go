// Package backup writes and reads Lotse's cluster backups: an etcd
// snapshot with the cluster's credentials and a manifest, in one file
// sealed with the manager's backup key, kept in a Store (a directory or an
// S3-compatible bucket) under names that sort by time.
package backup

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// Manifest describes what a backup holds.
type Manifest struct {
	// Namespace, Name and UID are the cluster's the snapshot was taken of.
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
	// KubernetesVersion the cluster ran.
	KubernetesVersion string `json:"kubernetesVersion"`
	// Created is when the snapshot was taken.
	Created time.Time `json:"created"`
	// Spec is the cluster's spec (JSON), from which --into makes a new one.
	Spec json.RawMessage `json:"spec,omitempty"`
	// EtcdSize and EtcdSHA256 describe the etcd snapshot file.
	EtcdSize   int64  `json:"etcdSize"`
	EtcdSHA256 string `json:"etcdSHA256"`
}

// Archive entries.
const (
	manifestEntry    = "manifest.json"
	etcdEntry        = "etcd.db"
	credentialPrefix = "credentials/"
)

// Write seals a backup of the etcd snapshot file at etcdPath and the
// credentials into w with key. m's etcd fields are filled in.
func Write(w io.Writer, key []byte, m Manifest, etcdPath string, credentials map[string][]byte) error {
	f, err := os.Open(etcdPath)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if m.EtcdSize, err = io.Copy(h, f); err != nil {
		return err
	}
	m.EtcdSHA256 = hex.EncodeToString(h.Sum(nil))
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	manifest, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}

	sealed, err := newSealWriter(w, key)
	if err != nil {
		return err
	}
	zw, err := gzip.NewWriterLevel(sealed, gzip.BestSpeed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	add := func(name string, size int64, r io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: size, ModTime: m.Created, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := io.Copy(tw, r)
		return err
	}
	if err := add(manifestEntry, int64(len(manifest)), bytes.NewReader(manifest)); err != nil {
		return err
	}
	for name, data := range credentials {
		if err := add(credentialPrefix+name, int64(len(data)), bytes.NewReader(data)); err != nil {
			return err
		}
	}
	if err := add(etcdEntry, m.EtcdSize, f); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return sealed.Close()
}

// Contents is an opened backup.
type Contents struct {
	Manifest Manifest
	// EtcdSnapshot is the path of the extracted etcd snapshot.
	EtcdSnapshot string
	Credentials  map[string][]byte
}

// Read opens a backup sealed with key, checks all of it and extracts the
// etcd snapshot into dir. Nothing is returned unless the whole file
// authenticated, ended properly and the snapshot matches its manifest: a
// truncated or altered file gives ErrCorrupt (wrapped).
func Read(r io.Reader, key []byte, dir string) (c Contents, err error) {
	// Failures to read the source (a connection reset) or to write the
	// extracted snapshot (a full disk) are not the file's fault: they are
	// returned as they are, so a caller tries again instead of calling
	// the backup corrupt.
	src := &errorRecorder{r: r}
	var sink errorRecorder
	defer func() {
		switch {
		case err == nil:
		case src.err != nil:
			err = fmt.Errorf("reading the backup: %w", src.err)
		case sink.err != nil:
			err = fmt.Errorf("extracting the etcd snapshot: %w", sink.err)
		}
	}()
	opened, err := newOpenReader(src, key)
	if err != nil {
		return c, err
	}
	zr, err := gzip.NewReader(opened)
	if err != nil {
		return c, corrupt(err)
	}
	tr := tar.NewReader(zr)
	c.Credentials = map[string][]byte{}
	var haveManifest bool
	var etcdSum string
	var etcdSize int64
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return c, corrupt(err)
		}
		switch name := path.Clean(hdr.Name); {
		case name == manifestEntry:
			data, err := io.ReadAll(io.LimitReader(tr, 1<<20))
			if err != nil {
				return c, corrupt(err)
			}
			if err := json.Unmarshal(data, &c.Manifest); err != nil {
				return c, fmt.Errorf("%w: manifest: %v", ErrCorrupt, err)
			}
			haveManifest = true
		case strings.HasPrefix(name, credentialPrefix):
			base := strings.TrimPrefix(name, credentialPrefix)
			if base == "" || strings.ContainsAny(base, "/\\") || base == ".." {
				return c, fmt.Errorf("%w: bad entry %q", ErrCorrupt, hdr.Name)
			}
			data, err := io.ReadAll(io.LimitReader(tr, 1<<20))
			if err != nil {
				return c, corrupt(err)
			}
			c.Credentials[base] = data
		case name == etcdEntry:
			c.EtcdSnapshot = filepath.Join(dir, etcdEntry)
			f, err := os.OpenFile(c.EtcdSnapshot, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
			if err != nil {
				return c, err
			}
			h := sha256.New()
			sink.w = f
			etcdSize, err = io.Copy(io.MultiWriter(&sink, h), tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return c, corrupt(err)
			}
			etcdSum = hex.EncodeToString(h.Sum(nil))
		}
	}
	// Drain to the end: only the final frame proves nothing was cut off.
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return c, corrupt(err)
	}
	if _, err := io.Copy(io.Discard, opened); err != nil {
		return c, corrupt(err)
	}
	switch {
	case !haveManifest:
		return c, fmt.Errorf("%w: no manifest", ErrCorrupt)
	case c.EtcdSnapshot == "":
		return c, fmt.Errorf("%w: no etcd snapshot", ErrCorrupt)
	case etcdSum != c.Manifest.EtcdSHA256 || etcdSize != c.Manifest.EtcdSize:
		return c, fmt.Errorf("%w: the etcd snapshot does not match its manifest", ErrCorrupt)
	}
	return c, nil
}

// errorRecorder passes reads or writes through and keeps the first error
// other than io.EOF.
type errorRecorder struct {
	r   io.Reader
	w   io.Writer
	err error
}

func (e *errorRecorder) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

func (e *errorRecorder) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil && e.err == nil {
		e.err = err
	}
	return n, err
}

func corrupt(err error) error {
	if errors.Is(err, ErrCorrupt) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrCorrupt, err)
}

// Snapshot file names: the time taken (UTC, so they sort by time) and an
// extension.
const (
	nameLayout = "20060102T150405Z"
	extension  = ".lotse-backup"
)

// SnapshotName is the name of a snapshot taken at t.
func SnapshotName(t time.Time) string { return t.UTC().Format(nameLayout) }

// FileName is the file a snapshot is stored in.
func FileName(snapshot string) string { return snapshot + extension }

// ParseFileName returns the snapshot a stored file holds and when it was
// taken; ok is false for files that are not snapshots.
func ParseFileName(file string) (snapshot string, taken time.Time, ok bool) {
	snapshot, found := strings.CutSuffix(file, extension)
	if !found {
		return "", time.Time{}, false
	}
	t, err := time.Parse(nameLayout, snapshot)
	if err != nil {
		return "", time.Time{}, false
	}
	return snapshot, t, true
}

// CheckSnapshotName refuses names that are not snapshot names (input from
// users: a restore's --from).
func CheckSnapshotName(snapshot string) error {
	if _, err := time.Parse(nameLayout, snapshot); err != nil {
		return fmt.Errorf("%q is not a snapshot name (they look like %s; `lotse cluster backups NAME` lists them)", snapshot, SnapshotName(time.Date(2026, 12, 1, 18, 30, 0, 0, time.UTC)))
	}
	return nil
}
