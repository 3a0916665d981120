package cloudapi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lotse/lotse/internal/clusterref"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/fsutil"
	"github.com/lotse/lotse/internal/ports"
)

// Host is the cloud API as the manager runs it: served on loopback at a
// port kept across restarts (the clusters' cloud controller managers keep
// their configuration, and keep running, when the manager restarts), with
// one client certificate per cluster, issued once and kept beside the CA.
type Host struct {
	Server *Server
	creds  *Credentials
	url    string
}

// portFile keeps the API's port in the credentials' directory.
const portFile = "port"

// Start serves s from the credentials in dir until ctx ends, on the port
// it had before when that is free (else a new one).
func Start(ctx context.Context, s *Server, dir string) (*Host, error) {
	creds, err := EnsureCredentials(dir)
	if err != nil {
		return nil, err
	}
	var url string
	if data, err := os.ReadFile(filepath.Join(dir, portFile)); err == nil {
		if port, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil {
			url, _ = s.Serve(ctx, creds, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		}
	}
	if url == "" {
		p, err := ports.Allocate(1)
		if err != nil {
			return nil, err
		}
		if url, err = s.Serve(ctx, creds, net.JoinHostPort("127.0.0.1", strconv.Itoa(p[0]))); err != nil {
			return nil, err
		}
		if err := fsutil.WriteFileAtomic(filepath.Join(dir, portFile), []byte(strconv.Itoa(p[0])+"\n"), 0o600); err != nil {
			return nil, err
		}
	}
	return &Host{Server: s, creds: creds, url: url}, nil
}

// URL is where the API listens.
func (h *Host) URL() string { return h.url }

// clientFiles are a cluster's client certificate and key.
func (h *Host) clientFiles(cluster clusterref.Ref) (cert, key string) {
	base := filepath.Join(h.creds.Dir, "clients", cluster.Namespace, cluster.Name)
	return base + ".crt", base + ".key"
}

// Access serves the cluster with this UID and region and returns the
// API's URL and CA and the cluster's client certificate: the one issued
// before if it names this UID, else a new one.
func (h *Host) Access(cluster clusterref.Ref, uid, region string) (controlplane.CloudAPIAccess, error) {
	if uid == "" {
		return controlplane.CloudAPIAccess{}, fmt.Errorf("cluster %s has no UID", cluster)
	}
	ca, err := os.ReadFile(h.creds.CAFile())
	if err != nil {
		return controlplane.CloudAPIAccess{}, err
	}
	certFile, keyFile := h.clientFiles(cluster)
	cert, certErr := os.ReadFile(certFile)
	key, keyErr := os.ReadFile(keyFile)
	if certErr != nil || keyErr != nil || !h.creds.names(cert, cluster, uid) {
		if cert, key, err = h.creds.IssueClient(cluster, uid); err != nil {
			return controlplane.CloudAPIAccess{}, err
		}
		if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
			return controlplane.CloudAPIAccess{}, err
		}
		// The key first: a certificate without its key is issued again.
		if err := fsutil.WriteFileAtomic(keyFile, key, 0o600); err != nil {
			return controlplane.CloudAPIAccess{}, err
		}
		if err := fsutil.WriteFileAtomic(certFile, cert, 0o600); err != nil {
			return controlplane.CloudAPIAccess{}, err
		}
	}
	h.Server.Register(cluster, uid, region)
	return controlplane.CloudAPIAccess{URL: h.url, CA: ca, Cert: cert, Key: key}, nil
}

// Forget stops serving a cluster and removes its client certificate.
func (h *Host) Forget(cluster clusterref.Ref) error {
	h.Server.Unregister(cluster)
	certFile, keyFile := h.clientFiles(cluster)
	for _, f := range []string{certFile, keyFile} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}
