package images

import (
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// inputDigests remembers the digests of image inputs read from the host
// (a binary, a tree of host files with their libraries): computing them
// hashes tens of megabytes and runs ldd, and Built is asked on every
// machine reconcile. A remembered digest holds while every file of its
// tree has the same inode, size and modification time and every symlink
// the same target; anything else computes it again.
type inputDigests struct {
	mu   sync.Mutex
	memo map[string]inputDigest
}

type inputDigest struct {
	sum   string
	files map[string]fileStamp
	links map[string]string
}

type fileStamp struct {
	ino, size uint64
	mtime     time.Time
}

func stampOf(path string) (fileStamp, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, false
	}
	st := fileStamp{size: uint64(fi.Size()), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
	}
	return st, true
}

// digest returns the remembered digest of id when its files are
// unchanged, else collects its files and hashes them. The stamps are
// taken between the two: a file that changes while it is hashed fails
// the next check and is hashed again.
func (d *inputDigests) digest(id string, collect func() (*hostTree, error), hash func(*hostTree) (string, error)) (string, error) {
	d.mu.Lock()
	m, ok := d.memo[id]
	d.mu.Unlock()
	if ok && m.unchanged() {
		return m.sum, nil
	}
	tree, err := collect()
	if err != nil {
		return "", err
	}
	m = inputDigest{files: map[string]fileStamp{}, links: map[string]string{}}
	remember := true
	for f := range tree.files {
		st, ok := stampOf(f)
		remember = remember && ok
		m.files[f] = st
	}
	for l, target := range tree.links {
		m.links[l] = target
	}
	// The directories holding them too: a file added to an expanded
	// directory, or a library appearing beside the ones ldd found,
	// changes its directory's time.
	for _, p := range tree.paths() {
		dir := filepath.Dir(p)
		if _, seen := m.files[dir]; seen {
			continue
		}
		st, ok := stampOf(dir)
		remember = remember && ok
		m.files[dir] = st
	}
	if m.sum, err = hash(tree); err != nil {
		return "", err
	}
	if remember {
		d.mu.Lock()
		if d.memo == nil {
			d.memo = map[string]inputDigest{}
		}
		d.memo[id] = m
		d.mu.Unlock()
	}
	return m.sum, nil
}

func (m inputDigest) unchanged() bool {
	for f, want := range m.files {
		if st, ok := stampOf(f); !ok || st != want {
			return false
		}
	}
	for l, want := range m.links {
		if target, err := os.Readlink(l); err != nil || target != want {
			return false
		}
	}
	return true
}
