package backup

import (
	"context"
	"fmt"
	"sort"
	"time"
)

// Snapshot is one stored backup.
type Snapshot struct {
	Name  string
	Taken time.Time
	Size  int64
}

// List returns the snapshots in a store, oldest first.
func List(ctx context.Context, s Store) ([]Snapshot, error) {
	objects, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []Snapshot
	for _, o := range objects {
		if name, taken, ok := ParseFileName(o.Name); ok {
			out = append(out, Snapshot{Name: name, Taken: taken, Size: o.Size})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Taken.Before(out[j].Taken) })
	return out, nil
}

// Prune deletes the oldest snapshots beyond keep and returns what it
// deleted. keep below 1 keeps one: a prune never empties a store.
func Prune(ctx context.Context, s Store, keep int) ([]string, error) {
	keep = max(keep, 1)
	snaps, err := List(ctx, s)
	if err != nil {
		return nil, err
	}
	var deleted []string
	for len(snaps) > keep {
		if err := s.Delete(ctx, FileName(snaps[0].Name)); err != nil {
			return deleted, fmt.Errorf("remove snapshot %s from %s: %w", snaps[0].Name, s, err)
		}
		deleted = append(deleted, snaps[0].Name)
		snaps = snaps[1:]
	}
	return deleted, nil
}
