// Package clusterref names a tenant cluster: its namespace and name, and
// the key derived from them that backends and providers file its control
// plane, processes and machines under. The key is formatted and parsed
// here only.
package clusterref

import "strings"

// keyPrefix starts every cluster's key ("clusters/<namespace>/<name>").
const keyPrefix = "clusters"

// Ref names one Cluster object.
type Ref struct {
	Namespace, Name string
}

// Key is the cluster's key: "clusters/<namespace>/<name>". Backends use it
// as a directory below their state directory and as the prefix of the
// names of the cluster's processes.
func (r Ref) Key() string { return keyPrefix + "/" + r.Namespace + "/" + r.Name }

// String is "<namespace>/<name>".
func (r Ref) String() string { return r.Namespace + "/" + r.Name }

// ParseKey returns the cluster a key, or anything filed under a key (a
// process name such as "clusters/ns/c1/etcd-0"), belongs to.
func ParseKey(s string) (Ref, bool) {
	parts := strings.SplitN(s, "/", 4)
	if len(parts) < 3 || parts[0] != keyPrefix || parts[1] == "" || parts[2] == "" {
		return Ref{}, false
	}
	return Ref{Namespace: parts[1], Name: parts[2]}, true
}
