// Package cloudapi is the manager's side of the cloud API: the HTTPS
// endpoint each tenant cluster's cloud controller manager process
// (lotse-cloud-controller-manager, built per Kubernetes release from
// internal/cloudapi/ccm) asks about its nodes' machines and its Services'
// balancers. A client certificate from the API's own CA names one cluster,
// and the server answers for that cluster only, with Lotse's provider
// (internal/cloudprovider) behind it: the rules stay in one place and one
// version while the controllers follow each cluster's release.
package cloudapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/lotse/lotse/internal/cloudapi/ccm/provider"
	"github.com/lotse/lotse/internal/cloudprovider"
	"github.com/lotse/lotse/internal/clusterref"
	"github.com/lotse/lotse/internal/pki"
)

// maxRequestBytes bounds a request: a Service and the cluster's nodes.
const maxRequestBytes = 16 << 20

// Server answers the cloud controller managers of the clusters it was
// told about (Register).
type Server struct {
	Machines      cloudprovider.Machines
	LoadBalancers cloudprovider.LoadBalancers

	mu       sync.RWMutex
	clusters map[clusterref.Ref]*registered
}

// registered is a cluster served. Requests hold active for reading while
// they run, so Unregister can wait for them: a balancer ensured by a
// request that began before the cluster's deletion must not appear after
// its balancers were removed.
type registered struct {
	uid, region string
	active      sync.RWMutex
}

// Register serves the cloud controller manager of the cluster with this
// UID, with the cluster's region for machines whose pool has none.
func (s *Server) Register(cluster clusterref.Ref, uid, region string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clusters == nil {
		s.clusters = map[clusterref.Ref]*registered{}
	}
	if reg, ok := s.clusters[cluster]; ok && reg.uid == uid && reg.region == region {
		return
	}
	s.clusters[cluster] = &registered{uid: uid, region: region}
}

// Unregister stops serving a cluster: its certificate is refused from
// now, and requests of it still running have ended when it returns.
func (s *Server) Unregister(cluster clusterref.Ref) {
	s.mu.Lock()
	reg, ok := s.clusters[cluster]
	delete(s.clusters, cluster)
	s.mu.Unlock()
	if ok {
		reg.active.Lock()
		defer reg.active.Unlock()
	}
}

// cloudOf returns the provider of the cluster the request's verified
// client certificate names, and the release of the request's hold on
// that cluster's registration.
func (s *Server) cloudOf(r *http.Request) (*cloudprovider.Cloud, func(), error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil, nil, errors.New("a client certificate of the cloud API's CA is required")
	}
	cn := r.TLS.VerifiedChains[0][0].Subject.CommonName
	ns, name, uid, ok := provider.ParseClientCommonName(cn)
	if !ok {
		return nil, nil, fmt.Errorf("the client certificate %q names no cluster", cn)
	}
	ref := clusterref.Ref{Namespace: ns, Name: name}
	s.mu.RLock()
	reg, ok := s.clusters[ref]
	if ok && reg.uid == uid {
		// Under s.mu: Unregister either removed it before (refused) or
		// waits for this request.
		reg.active.RLock()
	}
	s.mu.RUnlock()
	if !ok || reg.uid != uid {
		return nil, nil, fmt.Errorf("cluster %s (uid %s) is not served by this cloud API", ref, uid)
	}
	return &cloudprovider.Cloud{Cluster: ref, Machines: s.Machines, LoadBalancers: s.LoadBalancers, Region: reg.region}, reg.active.RUnlock, nil
}

// Handler serves the API's paths; it expects requests over TLS with a
// verified client certificate (Serve).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+provider.PathInstance, handle(s, func(ctx context.Context, cloud *cloudprovider.Cloud, in *provider.InstanceRequest) (any, error) {
		m, err := cloud.Machines.Machine(ctx, cloud.Cluster, in.Node.Name, in.Node.Spec.ProviderID)
		if err != nil || m == nil {
			return provider.Instance{}, err
		}
		md := cloud.Metadata(m, in.Node.Name)
		return provider.Instance{Exists: true, Shutdown: m.Shutdown, ProviderID: md.ProviderID, InstanceType: md.InstanceType,
			Zone: md.Zone, Region: md.Region, Addresses: md.NodeAddresses}, nil
	}))
	mux.HandleFunc("POST "+provider.PathLoadBalancerGet, handle(s, func(ctx context.Context, cloud *cloudprovider.Cloud, in *provider.LoadBalancerRequest) (any, error) {
		lbs, _ := cloud.LoadBalancer()
		status, exists, err := lbs.GetLoadBalancer(ctx, cloud.Cluster.Name, &in.Service)
		return provider.LoadBalancerResponse{Exists: exists, Status: status}, err
	}))
	mux.HandleFunc("POST "+provider.PathLoadBalancerEnsure, handle(s, func(ctx context.Context, cloud *cloudprovider.Cloud, in *provider.LoadBalancerRequest) (any, error) {
		lbs, _ := cloud.LoadBalancer()
		nodes := make([]*corev1.Node, 0, len(in.Nodes))
		for i := range in.Nodes {
			nodes = append(nodes, &in.Nodes[i])
		}
		status, err := lbs.EnsureLoadBalancer(ctx, cloud.Cluster.Name, &in.Service, nodes)
		return provider.LoadBalancerResponse{Exists: err == nil, Status: status}, err
	}))
	mux.HandleFunc("POST "+provider.PathLoadBalancerDelete, handle(s, func(ctx context.Context, cloud *cloudprovider.Cloud, in *provider.LoadBalancerRequest) (any, error) {
		lbs, _ := cloud.LoadBalancer()
		return struct{}{}, lbs.EnsureLoadBalancerDeleted(ctx, cloud.Cluster.Name, &in.Service)
	}))
	return mux
}

// handle decodes a request of type T, runs do for the caller's cluster and
// writes its answer, or the error with a status that says whose it is.
func handle[T any](s *Server, do func(context.Context, *cloudprovider.Cloud, *T) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		cloud, release, err := s.cloudOf(r)
		if err != nil {
			writeError(w, http.StatusForbidden, err)
			return
		}
		defer release()
		in := new(T)
		if err := json.NewDecoder(io.LimitReader(r.Body, maxRequestBytes)).Decode(in); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("the request body: %w", err))
			return
		}
		out, err := do(r.Context(), cloud, in)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	}
}

func writeError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(provider.ErrorResponse{Error: err.Error()})
}

// Credentials are the CA and server certificate of a cloud API, kept in
// one directory.
type Credentials struct {
	Dir string
	ca  *pki.CA
}

// caName is the CA's file name (ca.crt, ca.key) in Credentials.Dir.
const caName = "ca"

// EnsureCredentials loads, or makes, the cloud API's CA in dir.
func EnsureCredentials(dir string) (*Credentials, error) {
	ca, err := pki.EnsureCA(dir, caName, "lotse-cloud-api-ca")
	if err != nil {
		return nil, fmt.Errorf("the cloud API's CA: %w", err)
	}
	return &Credentials{Dir: dir, ca: ca}, nil
}

// CAFile is the CA's certificate, for clients to verify the server.
func (c *Credentials) CAFile() string { return filepath.Join(c.Dir, caName+".crt") }

// IssueClient returns a client certificate and key for the cloud
// controller manager of the cluster with this UID.
func (c *Credentials) IssueClient(cluster clusterref.Ref, uid string) (certPEM, keyPEM []byte, err error) {
	kp, err := c.ca.Issue(pki.CertSpec{CommonName: provider.ClientCommonName(cluster.Namespace, cluster.Name, uid), Client: true})
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = pki.KeyPEM(kp.Key)
	if err != nil {
		return nil, nil, err
	}
	return pki.CertPEM(kp.Cert), keyPEM, nil
}

// Serve listens on addr ("127.0.0.1:0" picks a port) with a fresh server
// certificate for its IP and serves until ctx ends; it returns the URL.
func (s *Server) Serve(ctx context.Context, creds *Credentials, addr string) (string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return "", fmt.Errorf("the cloud API listens on an IP address, not %q", host)
	}
	serving, err := newServingCert(creds, ip)
	if err != nil {
		return "", err
	}
	pool := x509.NewCertPool()
	pool.AddCert(creds.ca.Cert)
	tlsConfig := &tls.Config{
		// Issued again a month before it expires: the API lives as long
		// as the manager.
		GetCertificate: serving.get,
		ClientCAs:      pool,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		MinVersion:     tls.VersionTLS12,
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, TLSConfig: tlsConfig}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	return "https://" + ln.Addr().String(), nil
}

// names reports whether certPEM is a client certificate of this CA for the
// cluster with this UID that is valid for a while yet (a month: an older
// one is issued again).
func (c *Credentials) names(certPEM []byte, cluster clusterref.Ref, uid string) bool {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return false
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil || cert.CheckSignatureFrom(c.ca.Cert) != nil {
		return false
	}
	return cert.Subject.CommonName == provider.ClientCommonName(cluster.Namespace, cluster.Name, uid) &&
		time.Until(cert.NotAfter) > renewBefore
}

// servingCert is the API's server certificate, issued again when it
// nears its end.
type servingCert struct {
	creds *Credentials
	ip    net.IP
	mu    sync.Mutex
	cert  *tls.Certificate
}

func newServingCert(creds *Credentials, ip net.IP) (*servingCert, error) {
	s := &servingCert{creds: creds, ip: ip}
	if _, err := s.get(nil); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *servingCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cert != nil && time.Until(s.cert.Leaf.NotAfter) > renewBefore {
		return s.cert, nil
	}
	kp, err := s.creds.ca.Issue(pki.CertSpec{CommonName: "lotse-cloud-api", IPs: []net.IP{s.ip}, Server: true})
	if err != nil {
		return nil, err
	}
	s.cert = &tls.Certificate{Certificate: [][]byte{kp.Cert.Raw}, PrivateKey: kp.Key, Leaf: kp.Cert}
	return s.cert, nil
}

// renewBefore is how long before its end a certificate is issued again.
const renewBefore = 30 * 24 * time.Hour
