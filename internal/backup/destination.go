package backup

import (
	"context"
	"crypto/rand"
	"fmt"
	"k8s.io/apimachinery/pkg/util/validation"
	"os"
	"path"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// Key Secret: the manager's backup encryption key. Every backup the
// manager writes is sealed with it; keep a copy outside the management
// plane, or its backups cannot be read after the management plane is lost.
const (
	KeyNamespace  = "lotse-system"
	KeySecretName = "lotse-backup-key"
	keyDataName   = "key"
)

// S3 credential Secret keys.
const (
	S3AccessKeyID     = "accessKeyID"
	S3SecretAccessKey = "secretAccessKey"
	S3CA              = "ca.crt"
)

// Destinations turns a cluster's spec.backup into a Store and holds the
// manager's backup key.
type Destinations struct {
	Client client.Client
	// Reader reads Secrets (an uncached reader: the manager does not
	// cache every Secret of the management plane).
	Reader client.Reader
	// DefaultDir holds snapshots of clusters whose spec.backup names no
	// destination.
	DefaultDir string
	// WorkDir holds snapshots while they are sealed or extracted (empty:
	// the system's temporary directory).
	WorkDir string
}

// TempDir makes a private working directory for one backup or restore.
func (d *Destinations) TempDir(pattern string) (string, error) {
	if d.WorkDir != "" {
		if err := os.MkdirAll(d.WorkDir, 0o700); err != nil {
			return "", err
		}
	}
	return os.MkdirTemp(d.WorkDir, pattern)
}

// ExistingKey returns the manager's backup key without creating one: a
// restore on a rebuilt management plane must use the saved key, not a
// new one that could never open the snapshot.
func (d *Destinations) ExistingKey(ctx context.Context) ([]byte, error) {
	key, err := d.readKey(ctx)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("the backup key Secret %s/%s does not exist: create it from your copy of the key (data key %q, %d bytes) before restoring", KeyNamespace, KeySecretName, keyDataName, KeySize)
	}
	return key, err
}

// readKey reads the key Secret; a missing one is a NotFound error.
func (d *Destinations) readKey(ctx context.Context) ([]byte, error) {
	secret := &corev1.Secret{}
	ref := client.ObjectKey{Namespace: KeyNamespace, Name: KeySecretName}
	if err := d.Reader.Get(ctx, ref, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, err
		}
		return nil, fmt.Errorf("read the backup key Secret %s: %w", ref, err)
	}
	key := secret.Data[keyDataName]
	if len(key) != KeySize {
		return nil, fmt.Errorf("the backup key Secret %s holds %d bytes under %q, needs %d", ref, len(key), keyDataName, KeySize)
	}
	return key, nil
}

// Store returns where the snapshots of cluster NAMESPACE/NAME live, as
// spec (of the cluster in credentialsNamespace) says.
func (d *Destinations) Store(ctx context.Context, spec *lotsev1.BackupSpec, credentialsNamespace, namespace, name string) (Store, error) {
	if spec == nil {
		spec = &lotsev1.BackupSpec{}
	}
	if spec.S3 == nil {
		dir := spec.Directory
		if dir == "" {
			dir = d.DefaultDir
		}
		if dir == "" {
			return nil, fmt.Errorf("spec.backup: this manager has no default backup directory; set spec.backup.directory or spec.backup.s3")
		}
		return DirStore{Dir: filepath.Join(dir, namespace, name)}, nil
	}
	s3 := spec.S3
	secret := &corev1.Secret{}
	ref := client.ObjectKey{Namespace: credentialsNamespace, Name: s3.CredentialsSecretRef.Name}
	if err := d.Reader.Get(ctx, ref, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("spec.backup.s3.credentialsSecretRef: Secret %s not found; create it with the keys %s and %s", ref, S3AccessKeyID, S3SecretAccessKey)
		}
		return nil, err
	}
	for _, k := range []string{S3AccessKeyID, S3SecretAccessKey} {
		if len(secret.Data[k]) == 0 {
			return nil, fmt.Errorf("spec.backup.s3.credentialsSecretRef: Secret %s has no %s; add it", ref, k)
		}
	}
	prefix := strings.Trim(s3.Prefix, "/")
	return NewS3Store(S3Config{
		Endpoint:        s3.Endpoint,
		Bucket:          s3.Bucket,
		Prefix:          strings.TrimPrefix(path.Join(prefix, namespace, name)+"/", "/"),
		Region:          s3.Region,
		AccessKeyID:     strings.TrimSpace(string(secret.Data[S3AccessKeyID])),
		SecretAccessKey: strings.TrimSpace(string(secret.Data[S3SecretAccessKey])),
		CABundle:        secret.Data[S3CA],
	})
}

// Key returns the manager's backup key, creating it the first time.
func (d *Destinations) Key(ctx context.Context) ([]byte, error) {
	key, err := d.readKey(ctx)
	if !apierrors.IsNotFound(err) {
		return key, err
	}
	key = make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: KeyNamespace}}
	if err := d.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	immutable := true
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: KeyNamespace, Name: KeySecretName,
			Annotations: map[string]string{"lotse.dev/description": "seals every cluster backup of this manager; keep a copy outside the management plane"}},
		Immutable: &immutable,
		Data:      map[string][]byte{keyDataName: key},
	}
	if err := d.Client.Create(ctx, secret); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create the backup key Secret %s/%s: %w", KeyNamespace, KeySecretName, err)
		}
		// Another manager replica made it first: use theirs.
		return d.readKey(ctx)
	}
	return key, nil
}

// Ref names one snapshot of one cluster: NAMESPACE/CLUSTER/SNAPSHOT.
type Ref struct {
	Namespace, Cluster, Snapshot string
}

func (r Ref) String() string { return r.Namespace + "/" + r.Cluster + "/" + r.Snapshot }

// ParseRef reads the restore annotation's value; a bare snapshot name
// refers to the cluster namespace/name itself.
func ParseRef(value, namespace, name string) (Ref, error) {
	parts := strings.Split(strings.TrimSpace(value), "/")
	var r Ref
	switch len(parts) {
	case 1:
		r = Ref{Namespace: namespace, Cluster: name, Snapshot: parts[0]}
	case 3:
		r = Ref{Namespace: parts[0], Cluster: parts[1], Snapshot: parts[2]}
	default:
		return r, fmt.Errorf("annotation %s: %q is neither SNAPSHOT nor NAMESPACE/CLUSTER/SNAPSHOT", lotsev1.RestoreAnnotation, value)
	}
	if r.Namespace == "" || r.Cluster == "" {
		return r, fmt.Errorf("annotation %s: %q has an empty namespace or cluster", lotsev1.RestoreAnnotation, value)
	}
	// They become path elements of the store: nothing but names.
	if errs := validation.IsDNS1123Label(r.Namespace); len(errs) > 0 {
		return r, fmt.Errorf("annotation %s: namespace %q: %s", lotsev1.RestoreAnnotation, r.Namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(r.Cluster); len(errs) > 0 {
		return r, fmt.Errorf("annotation %s: cluster %q: %s", lotsev1.RestoreAnnotation, r.Cluster, strings.Join(errs, "; "))
	}
	if err := CheckSnapshotName(r.Snapshot); err != nil {
		return r, fmt.Errorf("annotation %s: %w", lotsev1.RestoreAnnotation, err)
	}
	return r, nil
}
