package backup

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotFound is returned by Store.Get for a name the store does not hold.
var ErrNotFound = errors.New("snapshot not found")

// Object is one file a Store holds.
type Object struct {
	Name     string
	Size     int64
	Modified time.Time
}

// Store keeps backup files under one root (a directory, or a bucket and
// prefix): one cluster's snapshots. Names are plain file names without
// slashes. Implementations never expose a half-written file under its
// final name.
type Store interface {
	// Put stores r under name; size is its length, or -1 if unknown.
	Put(ctx context.Context, name string, r io.Reader, size int64) error
	// Get opens a stored file; ErrNotFound (wrapped) if there is none.
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	// List returns the stored files, sorted by name.
	List(ctx context.Context) ([]Object, error)
	// Delete removes a file; a missing one is not an error.
	Delete(ctx context.Context, name string) error
	// String says where the store is, for messages (never credentials).
	String() string
}
