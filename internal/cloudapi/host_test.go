package cloudapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lotse/lotse/internal/cloudapi/ccm/provider"
	"github.com/lotse/lotse/internal/clusterref"
	"github.com/lotse/lotse/internal/controlplane"
)

// TestHost: the API keeps its port across restarts, a cluster keeps its
// client certificate (so its process is not restarted), a cluster of the
// same name with another UID gets a new one, and a forgotten cluster's
// certificate is gone and refused.
func TestHost(t *testing.T) {
	dir := t.TempDir()
	cluster := clusterref.Ref{Namespace: "team", Name: "a"}
	start := func() (*Host, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		h, err := Start(ctx, &Server{Machines: fakeMachines{}, LoadBalancers: &fakeLoadBalancers{}}, dir)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		return h, cancel
	}
	h, stop := start()
	if _, err := h.Lookup(cluster, "uid-1", "lab"); err == nil {
		t.Error("Lookup found access before any was given")
	}
	first, err := h.Access(cluster, "uid-1", "lab")
	if err != nil {
		t.Fatal(err)
	}
	if first.URL != h.URL() || len(first.CA) == 0 || len(first.Cert) == 0 || len(first.Key) == 0 {
		t.Fatalf("access %+v", first)
	}
	stop()

	h, stop = start()
	defer stop()
	if h.URL() != first.URL {
		t.Errorf("after a restart the API listens at %s, before at %s", h.URL(), first.URL)
	}
	// Served at once, before its cluster is reconciled again.
	if code := ask(t, first); code != http.StatusOK {
		t.Errorf("after a restart, the cluster's certificate: status %d, want 200", code)
	}
	if looked, err := h.Lookup(cluster, "uid-1", "lab"); err != nil || !bytes.Equal(looked.Cert, first.Cert) {
		t.Errorf("Lookup after a restart: %v, same certificate %v", err, bytes.Equal(looked.Cert, first.Cert))
	}
	again, err := h.Access(cluster, "uid-1", "lab")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Cert, first.Cert) || !bytes.Equal(again.Key, first.Key) {
		t.Error("the same cluster got a new client certificate")
	}
	if code := ask(t, again); code != http.StatusOK {
		t.Errorf("a registered cluster's certificate: status %d, want 200", code)
	}

	other, err := h.Access(cluster, "uid-2", "lab")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other.Cert, first.Cert) {
		t.Error("a new cluster of the same name got the deleted one's certificate")
	}
	if code := ask(t, first); code != http.StatusForbidden {
		t.Errorf("the old UID's certificate: status %d, want 403", code)
	}

	// A key that does not match its certificate (two writers
	// interleaved) is replaced with a new pair.
	_, keyFile, _ := h.clientFiles(cluster)
	if err := os.WriteFile(keyFile, first.Key, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Lookup(cluster, "uid-2", "lab"); err == nil {
		t.Error("Lookup returned a certificate with another's key")
	}
	if other, err = h.Access(cluster, "uid-2", "lab"); err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(other.Cert, other.Key); err != nil {
		t.Errorf("after a mismatched key: %v", err)
	}

	if err := h.Forget(cluster); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Lookup(cluster, "uid-2", "lab"); err == nil {
		t.Error("Lookup found a forgotten cluster's access")
	}
	if code := ask(t, other); code != http.StatusForbidden {
		t.Errorf("a forgotten cluster's certificate: status %d, want 403", code)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "clients", "team", "a.*")); len(left) > 0 {
		t.Errorf("client files left: %v", left)
	}
	if _, err := os.Stat(filepath.Join(dir, portFile)); err != nil {
		t.Error(err)
	}
}

// ask asks the API about a node with the access's certificate and returns
// the status.
func ask(t *testing.T, a controlplane.CloudAPIAccess) int {
	t.Helper()
	pair, err := tls.X509KeyPair(a.Cert, a.Key)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(a.CA)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: roots}}}
	defer c.CloseIdleConnections()
	resp, err := c.Post(a.URL+provider.PathInstance, "application/json", strings.NewReader(`{"node":{"metadata":{"name":"n"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestUnregisterWaitsForRequests: a cluster's request that began before
// Unregister has ended when Unregister returns (a balancer it ensures
// cannot appear after the cluster's balancers were removed), and one
// that begins after is refused.
func TestUnregisterWaitsForRequests(t *testing.T) {
	srv := &Server{}
	cluster := clusterref.Ref{Namespace: "team", Name: "a"}
	srv.Register(cluster, "uid-a", "lab")
	creds, err := EnsureCredentials(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := creds.IssueClient(cluster, "uid-a")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	req := &http.Request{TLS: &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}}
	_, release, err := srv.cloudOf(req)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Unregister(cluster); close(done) }()
	select {
	case <-done:
		t.Fatal("Unregister returned while a request of the cluster ran")
	case <-time.After(100 * time.Millisecond):
	}
	release()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Unregister did not return after the request ended")
	}
	if _, _, err := srv.cloudOf(req); err == nil {
		t.Error("a request after Unregister was served")
	}
}
