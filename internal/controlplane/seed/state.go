package seed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lotse/lotse/internal/fsutil"
)

// The manager's directory of a seed-hosted control plane is a cache: its
// layout and PKI are kept in a Secret of the control plane's namespace in
// the seed too (as Gardener keeps a shoot's CAs in its seed namespace).
// A manager that lost its directory — a new pod of a manager installed in
// a cluster, a new leader, a host rebuilt — takes the control plane back
// from there instead of making a new one beside it, with new
// certificates that no running component would trust.
const (
	stateSecretName = "lotse-state"
	stateLayoutKey  = "layout.json"
	statePKIPrefix  = "pki."
)

// Locator names the seed a control plane was placed on (the Cluster's
// status), for callers that know only its key.
type Locator func(ctx context.Context, key string) (seed string, err error)

// stateData is what the Secret holds: the layout file and every file of
// the PKI directory.
func (b *Backend) stateData(key string) (map[string][]byte, error) {
	layout, err := os.ReadFile(b.layoutPath(key))
	if err != nil {
		return nil, err
	}
	data := map[string][]byte{stateLayoutKey: layout}
	dir := b.PKI(key).Dir
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		content, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		data[statePKIPrefix+e.Name()] = content
	}
	return data, nil
}

// saveState writes the control plane's layout and PKI to its Secret in
// the seed, creating its namespace if it is not there yet. It writes only
// what changed.
func (b *Backend) saveState(ctx context.Context, sc *seedClient, key string, l Layout) error {
	data, err := b.stateData(key)
	if err != nil {
		return err
	}
	secrets := sc.kube.CoreV1().Secrets(l.Namespace)
	have, err := secrets.Get(ctx, stateSecretName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		// Created, not applied: the objects stage applies the namespace
		// with its labels, and an apply of a bare one here would take
		// them away.
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: l.Namespace, Labels: map[string]string{LabelPartOf: partOf}}}
		if _, err := sc.kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{FieldManager: fieldManager}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("namespace %s on seed %s: %w", l.Namespace, l.Seed, err)
		}
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: stateSecretName, Namespace: l.Namespace, Labels: labels("state")},
			Type: corev1.SecretTypeOpaque, Data: data}
		_, err = secrets.Create(ctx, s, metav1.CreateOptions{FieldManager: fieldManager})
		return err
	case err != nil:
		return err
	case sameData(have.Data, data):
		return nil
	}
	have.Data = data
	_, err = secrets.Update(ctx, have, metav1.UpdateOptions{FieldManager: fieldManager})
	return err
}

func sameData(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

// restoreState writes the directory of a control plane back from its
// Secret in seed. It reports false when the seed has no state of it (a
// control plane not created yet).
func (b *Backend) restoreState(ctx context.Context, seed, key string) (bool, error) {
	sc, err := b.client(ctx, seed)
	if err != nil {
		return false, err
	}
	ns := NamespaceFor(b.Supervisor.Owner(), key)
	s, err := sc.kube.CoreV1().Secrets(ns).Get(ctx, stateSecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("the state of the control plane on seed %s: %w", seed, err)
	}
	layout, ok := s.Data[stateLayoutKey]
	if !ok {
		return false, fmt.Errorf("secret %s/%s on seed %s has no %s", ns, stateSecretName, seed, stateLayoutKey)
	}
	dir := b.PKI(key).Dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	for k, v := range s.Data {
		name, ok := strings.CutPrefix(k, statePKIPrefix)
		if !ok {
			continue
		}
		if name == "" || name != filepath.Base(name) || strings.HasPrefix(name, ".") {
			return false, fmt.Errorf("secret %s/%s on seed %s: unsafe file name %q", ns, stateSecretName, seed, k)
		}
		if err := fsutil.WriteFileAtomic(filepath.Join(dir, name), v, 0o600); err != nil {
			return false, err
		}
	}
	// The layout last: its presence says the directory is whole.
	return true, fsutil.WriteFileAtomic(b.layoutPath(key), layout, 0o600)
}

// layout reads a control plane's layout, taking its directory back from
// its seed (given, or found by Locate) first when it is missing here.
func (b *Backend) layout(ctx context.Context, key, seed string) (Layout, error) {
	l, err := b.LoadLayout(key)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return l, err
	}
	if seed == "" && b.Locate != nil {
		seed, _ = b.Locate(ctx, key)
	}
	if seed == "" {
		return l, err
	}
	b.layoutMu.Lock()
	defer b.layoutMu.Unlock()
	if l, err := b.LoadLayout(key); err == nil {
		return l, nil
	}
	if found, rerr := b.restoreState(ctx, seed, key); rerr != nil {
		return l, rerr
	} else if !found {
		return l, err
	}
	return b.LoadLayout(key)
}
