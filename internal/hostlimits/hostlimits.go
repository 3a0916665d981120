// Package hostlimits raises the host's kernel limits that many control
// planes and machines on one host outgrow. Every containerd (its CRI
// watches the CNI configuration), kubelet and API server (its certificate
// files) holds inotify instances; Debian's default of 128 per user runs
// out with a handful of clusters with nodes, and a containerd started
// then comes up without its CRI plugin ("failed to create fsnotify
// watcher: too many open files"), so its machine never gets a node.
package hostlimits

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Limit is a kernel limit under /proc/sys and the least value Lotse needs.
type Limit struct {
	Key  string // e.g. "fs.inotify.max_user_instances"
	Want int64
}

// Limits are what Lotse raises: inotify instances and watches per user
// (the values kind and most Kubernetes distributions recommend).
var Limits = []Limit{
	{Key: "fs.inotify.max_user_instances", Want: 8192},
	{Key: "fs.inotify.max_user_watches", Want: 524288},
}

// procSys is where the limits are read and written (tests change it).
var procSys = "/proc/sys"

// Ensure raises every limit below its least value and never lowers one.
// It returns what it raised ("key old -> new"), for a log line.
func Ensure() ([]string, error) {
	var raised []string
	for _, l := range Limits {
		path := filepath.Join(procSys, strings.ReplaceAll(l.Key, ".", "/"))
		data, err := os.ReadFile(path)
		if err != nil {
			return raised, fmt.Errorf("read %s: %w", l.Key, err)
		}
		have, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		if err != nil {
			return raised, fmt.Errorf("read %s: %w", l.Key, err)
		}
		if have >= l.Want {
			continue
		}
		if err := os.WriteFile(path, []byte(strconv.FormatInt(l.Want, 10)), 0o644); err != nil {
			return raised, fmt.Errorf("%s is %d, Lotse needs %d (sysctl -w %s=%d as root): %w", l.Key, have, l.Want, l.Key, l.Want, err)
		}
		raised = append(raised, fmt.Sprintf("%s %d -> %d", l.Key, have, l.Want))
	}
	return raised, nil
}
