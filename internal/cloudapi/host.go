package cloudapi

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

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
	// mu orders the issuing and removing of clients' files (the cluster
	// controller and care ask at the same time).
	mu sync.Mutex
}

// client is what Host keeps of a cluster besides its certificate, so a
// restarted manager serves the cluster's process at once.
type client struct {
	UID    string `json:"uid"`
	Region string `json:"region"`
}

// portFile keeps the API's port in the credentials' directory; a busy
// port is tried portAttempts times, portRetry apart, before another is
// taken (which restarts every cluster's process with the new URL).
const (
	portFile     = "port"
	portAttempts = 10
	portRetry    = 500 * time.Millisecond
)

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
			// The manager before this one may still be letting go of it.
			for attempt := 0; url == "" && attempt < portAttempts; attempt++ {
				if attempt > 0 {
					select {
					case <-ctx.Done():
						return nil, ctx.Err()
					case <-time.After(portRetry):
					}
				}
				url, _ = s.Serve(ctx, creds, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			}
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
	h := &Host{Server: s, creds: creds, url: url}
	// The clusters served before the restart are served again at once:
	// their processes kept running.
	records, _ := filepath.Glob(filepath.Join(dir, "clients", "*", "*.json"))
	for _, f := range records {
		var c client
		if data, err := os.ReadFile(f); err == nil && json.Unmarshal(data, &c) == nil && c.UID != "" {
			name := strings.TrimSuffix(filepath.Base(f), ".json")
			s.Register(clusterref.Ref{Namespace: filepath.Base(filepath.Dir(f)), Name: name}, c.UID, c.Region)
		}
	}
	return h, nil
}

// URL is where the API listens.
func (h *Host) URL() string { return h.url }

// clientFiles are a cluster's client certificate, key and record.
func (h *Host) clientFiles(cluster clusterref.Ref) (cert, key, record string) {
	base := filepath.Join(h.creds.Dir, "clients", cluster.Namespace, cluster.Name)
	return base + ".crt", base + ".key", base + ".json"
}

// stored returns the cluster's kept client certificate and key if they
// are a pair of this API's CA for this UID, valid for a while yet.
func (h *Host) stored(cluster clusterref.Ref, uid string) (cert, key []byte, ok bool) {
	certFile, keyFile, _ := h.clientFiles(cluster)
	cert, certErr := os.ReadFile(certFile)
	key, keyErr := os.ReadFile(keyFile)
	if certErr != nil || keyErr != nil || !h.creds.names(cert, cluster, uid) {
		return nil, nil, false
	}
	if _, err := tls.X509KeyPair(cert, key); err != nil {
		return nil, nil, false
	}
	return cert, key, true
}

// Access serves the cluster with this UID and region and returns the
// API's URL and CA and the cluster's client certificate: the one issued
// before if it still fits, else a new one.
func (h *Host) Access(cluster clusterref.Ref, uid, region string) (controlplane.CloudAPIAccess, error) {
	if uid == "" {
		return controlplane.CloudAPIAccess{}, fmt.Errorf("cluster %s has no UID", cluster)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	ca, err := os.ReadFile(h.creds.CAFile())
	if err != nil {
		return controlplane.CloudAPIAccess{}, err
	}
	certFile, keyFile, recordFile := h.clientFiles(cluster)
	cert, key, ok := h.stored(cluster, uid)
	if !ok {
		if cert, key, err = h.creds.IssueClient(cluster, uid); err != nil {
			return controlplane.CloudAPIAccess{}, err
		}
		if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
			return controlplane.CloudAPIAccess{}, err
		}
		if err := fsutil.WriteFileAtomic(keyFile, key, 0o600); err != nil {
			return controlplane.CloudAPIAccess{}, err
		}
		if err := fsutil.WriteFileAtomic(certFile, cert, 0o600); err != nil {
			return controlplane.CloudAPIAccess{}, err
		}
	}
	record, err := json.Marshal(client{UID: uid, Region: region})
	if err != nil {
		return controlplane.CloudAPIAccess{}, err
	}
	if err := fsutil.WriteIfChanged(recordFile, record, 0o600); err != nil {
		return controlplane.CloudAPIAccess{}, err
	}
	h.Server.Register(cluster, uid, region)
	return controlplane.CloudAPIAccess{URL: h.url, CA: ca, Cert: cert, Key: key}, nil
}

// Lookup returns the access Access gave the cluster with this UID, without
// issuing or registering anything (a reader such as care must not bring
// back a cluster that is being forgotten).
func (h *Host) Lookup(cluster clusterref.Ref, uid, _ string) (controlplane.CloudAPIAccess, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ca, err := os.ReadFile(h.creds.CAFile())
	if err != nil {
		return controlplane.CloudAPIAccess{}, err
	}
	cert, key, ok := h.stored(cluster, uid)
	if !ok {
		return controlplane.CloudAPIAccess{}, fmt.Errorf("cluster %s (uid %s) has no cloud API access yet", cluster, uid)
	}
	return controlplane.CloudAPIAccess{URL: h.url, CA: ca, Cert: cert, Key: key}, nil
}

// Forget stops serving a cluster, waits for its requests in flight, and
// removes its client certificate.
func (h *Host) Forget(cluster clusterref.Ref) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.Server.Unregister(cluster)
	certFile, keyFile, recordFile := h.clientFiles(cluster)
	for _, f := range []string{recordFile, certFile, keyFile} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}
