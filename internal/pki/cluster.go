package pki

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Encryption providers of the EncryptionConfiguration.
const (
	ProviderAESCBC    = "aescbc"
	ProviderAESGCM    = "aesgcm"
	ProviderSecretbox = "secretbox"
)

// ClusterParams are the inputs that shape a cluster's PKI.
type ClusterParams struct {
	// Name is used in certificate subjects.
	Name string
	// ServiceCIDR gives the in-cluster address of the kubernetes Service (its first IP).
	ServiceCIDR string
	// APIServerHosts are extra names or IPs the API server is reached by.
	APIServerHosts []string
	// EtcdHosts are the names or IPs etcd members are reached by.
	EtcdHosts []string
	// EncryptionProvider is aescbc, aesgcm or secretbox.
	EncryptionProvider string
	// EncryptedResources are encrypted at rest; secrets always are.
	EncryptedResources []string
	// ServiceAccountKeyStage and EncryptionKeyStage, when set, apply that
	// stage of a rotation (SAKeyStage*, KeyStage*; idempotent).
	ServiceAccountKeyStage string
	EncryptionKeyStage     string
	// CAStage, when set, applies that stage of a rotation of the cluster
	// CA (CAStage*; idempotent).
	CAStage string
}

// ClusterPKI is the set of files of one cluster. All paths are absolute.
type ClusterPKI struct {
	Dir string
}

// File names inside the PKI directory.
const (
	CAName           = "ca"
	EtcdCAName       = "etcd-ca"
	FrontProxyCAName = "front-proxy-ca"
	// KonnectivityCAName signs the tunnel's certificates only, so no other
	// client certificate of the cluster (a kubelet's, say) can pose as an agent.
	KonnectivityCAName     = "konnectivity-ca"
	KonnectivityServerName = "konnectivity-server"
	KonnectivityAgentName  = "konnectivity-agent"
	APIServerName          = "apiserver"
	APIServerKubeletName   = "apiserver-kubelet-client"
	APIServerEtcdName      = "apiserver-etcd-client"
	FrontProxyClientName   = "front-proxy-client"
	EtcdServerName         = "etcd-server"
	EtcdPeerName           = "etcd-peer"
	EtcdAdminName          = "etcd-admin"
	AdminName              = "admin"
	ControllerMgrName      = "controller-manager"
	SchedulerName          = "scheduler"
	KubeProxyName          = "kube-proxy"
	ControllerMgrServing   = "controller-manager-serving"
	SchedulerServing       = "scheduler-serving"
	CloudControllerName    = "cloud-controller-manager"
	CloudControllerServing = "cloud-controller-manager-serving"
	ServiceAccountName     = "sa"
	EncryptionConfigFile   = "encryption-config.yaml"
)

// CloudControllerUser is the user a cluster's cloud controller manager
// is in its API server: Lotse's addons bind it to what the cloud
// controllers need and nothing more.
const CloudControllerUser = "lotse:cloud-controller-manager"

// Cert returns the path of NAME.crt.
func (p ClusterPKI) Cert(name string) string { return filepath.Join(p.Dir, name+".crt") }

// Key returns the path of NAME.key.
func (p ClusterPKI) Key(name string) string { return filepath.Join(p.Dir, name+".key") }

// Path returns the path of a file in the PKI directory.
func (p ClusterPKI) Path(name string) string { return filepath.Join(p.Dir, name) }

// Kubeconfig returns the path of a component's kubeconfig.
func (p ClusterPKI) Kubeconfig(name string) string { return filepath.Join(p.Dir, name+".kubeconfig") }

// EnsureCluster creates every missing file of a cluster's PKI in dir and
// leaves existing ones alone.
func EnsureCluster(dir string, params ClusterParams) (ClusterPKI, error) {
	p := ClusterPKI{Dir: dir}
	switch params.EncryptionProvider {
	case "", ProviderAESCBC, ProviderAESGCM, ProviderSecretbox:
	default:
		return p, fmt.Errorf("unknown encryption provider %q (use aescbc, aesgcm or secretbox)", params.EncryptionProvider)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return p, err
	}
	if params.CAStage != "" {
		if err := p.RotateCA(params.CAStage, fmt.Sprintf("%s-%s-%s", params.Name, CAName, time.Now().UTC().Format("20060102-150405"))); err != nil {
			return p, fmt.Errorf("CA rotation: %w", err)
		}
	}
	cas := map[string]*CA{}
	for _, name := range []string{CAName, EtcdCAName, FrontProxyCAName, KonnectivityCAName} {
		ca, err := ensureCA(dir, name, params.Name+"-"+name)
		if err != nil {
			return p, fmt.Errorf("%s: %w", name, err)
		}
		cas[name] = ca
	}
	kubernetesIP, err := firstIP(params.ServiceCIDR)
	if err != nil {
		return p, fmt.Errorf("service CIDR: %w", err)
	}
	apiDNS, apiIPs := splitHosts(append([]string{"127.0.0.1", "localhost", kubernetesIP.String(),
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}, params.APIServerHosts...))
	etcdDNS, etcdIPs := splitHosts(append([]string{"127.0.0.1", "localhost"}, params.EtcdHosts...))
	leaves := []struct {
		ca, name string
		spec     CertSpec
	}{
		{CAName, APIServerName, CertSpec{CommonName: "kube-apiserver", DNSNames: apiDNS, IPs: apiIPs, Server: true}},
		{CAName, APIServerKubeletName, CertSpec{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}, Client: true}},
		{CAName, AdminName, CertSpec{CommonName: "lotse-admin", Organization: []string{"system:masters"}, Client: true}},
		{CAName, ControllerMgrName, CertSpec{CommonName: "system:kube-controller-manager", Client: true}},
		{CAName, SchedulerName, CertSpec{CommonName: "system:kube-scheduler", Client: true}},
		{CAName, KubeProxyName, CertSpec{CommonName: "system:kube-proxy", Client: true}},
		{CAName, CloudControllerName, CertSpec{CommonName: CloudControllerUser, Client: true}},
		{CAName, ControllerMgrServing, CertSpec{CommonName: "kube-controller-manager", DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true}},
		{CAName, SchedulerServing, CertSpec{CommonName: "kube-scheduler", DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true}},
		{CAName, CloudControllerServing, CertSpec{CommonName: "cloud-controller-manager", DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true}},
		{FrontProxyCAName, FrontProxyClientName, CertSpec{CommonName: "front-proxy-client", Client: true}},
		{EtcdCAName, EtcdServerName, CertSpec{CommonName: "etcd-server", DNSNames: etcdDNS, IPs: etcdIPs, Server: true, Client: true}},
		{EtcdCAName, EtcdPeerName, CertSpec{CommonName: "etcd-peer", DNSNames: etcdDNS, IPs: etcdIPs, Server: true, Client: true}},
		{EtcdCAName, APIServerEtcdName, CertSpec{CommonName: "kube-apiserver-etcd-client", Client: true}},
		{EtcdCAName, EtcdAdminName, CertSpec{CommonName: "lotse-etcd-admin", Client: true}},
		// The agents reach the tunnel server where they reach the API server.
		{KonnectivityCAName, KonnectivityServerName, CertSpec{CommonName: "konnectivity-server", DNSNames: apiDNS, IPs: apiIPs, Server: true}},
		{KonnectivityCAName, KonnectivityAgentName, CertSpec{CommonName: "system:konnectivity-agent", Client: true}},
	}
	if err := p.EnsureTrustBundle(); err != nil {
		return p, fmt.Errorf("trust bundle: %w", err)
	}
	chain, err := p.servingChain()
	if err != nil {
		return p, err
	}
	for _, l := range leaves {
		// A leaf of the cluster CA that the signing CA did not sign is
		// from before a rotation, and a serving leaf that lacks a name it
		// is now reached by (a load balancer's new address) is stale:
		// both are issued again.
		current := exists(p.Cert(l.name)) && exists(p.Key(l.name)) &&
			(l.ca != CAName || p.signedBy(l.name, cas[CAName])) &&
			(!l.spec.Server || p.names(l.name, l.spec.DNSNames, l.spec.IPs))
		if !current {
			kp, err := cas[l.ca].Issue(l.spec)
			if err != nil {
				return p, fmt.Errorf("%s: %w", l.name, err)
			}
			if err := writePair(dir, l.name, kp.Cert, kp.Key); err != nil {
				return p, err
			}
		}
		if l.ca == CAName && l.spec.Server {
			if err := p.ensureLeafChain(l.name, chain); err != nil {
				return p, err
			}
		}
	}
	if err := ensureServiceAccountKey(p); err != nil {
		return p, fmt.Errorf("service-account key: %w", err)
	}
	if params.ServiceAccountKeyStage != "" {
		if err := p.RotateServiceAccountKey(params.ServiceAccountKeyStage); err != nil {
			return p, fmt.Errorf("service-account key rotation: %w", err)
		}
	}
	if params.EncryptionKeyStage != "" {
		if _, err := p.RotateEncryptionKey(params.EncryptionKeyStage, params.EncryptionProvider); err != nil {
			return p, fmt.Errorf("encryption key rotation: %w", err)
		}
	}
	if err := ensureEncryptionConfig(p, params.EncryptionProvider, params.EncryptedResources); err != nil {
		return p, fmt.Errorf("encryption configuration: %w", err)
	}
	return p, nil
}

// names says whether the certificate file NAME's leaf carries every one
// of dnsNames and ips. Extra names are no reason to reissue: a leaf is
// replaced only when a client could fail to verify it.
func (p ClusterPKI) names(name string, dnsNames []string, ips []net.IP) bool {
	cert, _, err := loadPair(p.Dir, name)
	if err != nil {
		return false
	}
	for _, n := range dnsNames {
		if !slices.Contains(cert.DNSNames, n) {
			return false
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

// CA loads the cluster's CA, the one that signs its API clients.
func (p ClusterPKI) CA() (*CA, error) {
	cert, key, err := loadPair(p.Dir, CAName)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// EnsureCA loads the CA NAME.crt/NAME.key in dir, or makes it there.
func EnsureCA(dir, name, commonName string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return ensureCA(dir, name, commonName)
}

func ensureCA(dir, name, commonName string) (*CA, error) {
	if exists(filepath.Join(dir, name+".crt")) && exists(filepath.Join(dir, name+".key")) {
		cert, key, err := loadPair(dir, name)
		if err != nil {
			return nil, err
		}
		return &CA{Cert: cert, Key: key}, nil
	}
	ca, err := NewCA(commonName)
	if err != nil {
		return nil, err
	}
	return ca, writePair(dir, name, ca.Cert, ca.Key)
}

func ensureServiceAccountKey(p ClusterPKI) error {
	return ensureServiceAccountKeyAt(p.Key(ServiceAccountName), p.Path(ServiceAccountName+".pub"))
}

// ensureServiceAccountKeyAt makes a key pair unless both files exist; the
// public half is written last, so a pair with a public key is complete.
func ensureServiceAccountKeyAt(keyPath, pubPath string) error {
	if exists(keyPath) && exists(pubPath) {
		return nil
	}
	key, err := newKey()
	if err != nil {
		return err
	}
	keyPEM, err := KeyPEM(key)
	if err != nil {
		return err
	}
	pubPEM, err := PublicKeyPEM(key.Public())
	if err != nil {
		return err
	}
	if err := writeSecretFile(keyPath, keyPEM); err != nil {
		return err
	}
	return writeSecretFile(pubPath, pubPEM)
}

func firstIP(cidr string) (net.IP, error) {
	prefix, err := netip.ParsePrefix(cidr)
	if err != nil {
		return nil, err
	}
	return net.IP(prefix.Masked().Addr().Next().AsSlice()), nil
}

func splitHosts(hosts []string) (dns []string, ips []net.IP) {
	seen := map[string]bool{}
	for _, h := range hosts {
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, h)
		}
	}
	return dns, ips
}

// AddonsCAName signs the serving certificates of addons the API server
// calls (metrics-server's aggregated API): a CA of their own, so such a
// certificate is good for nothing else.
const AddonsCAName = "addons-ca"

// EnsureAddonServing returns the PEM CA, certificate and key an addon
// serves with, issued by the cluster's addons CA for dnsNames; they are
// made once and kept (reissued only when the names change).
func (p ClusterPKI) EnsureAddonServing(name string, dnsNames []string) (ca, cert, key []byte, err error) {
	leaf := "addon-" + name
	c, err := ensureCA(p.Dir, AddonsCAName, "lotse-addons-ca")
	if err != nil {
		return nil, nil, nil, err
	}
	current := exists(p.Cert(leaf)) && exists(p.Key(leaf))
	if current {
		old, _, err := loadPair(p.Dir, leaf)
		current = err == nil && slices.Equal(old.DNSNames, dnsNames) && old.CheckSignatureFrom(c.Cert) == nil &&
			time.Until(old.NotAfter) > leafValidity/4
	}
	if !current {
		kp, err := c.Issue(CertSpec{CommonName: dnsNames[0], DNSNames: dnsNames, Server: true})
		if err != nil {
			return nil, nil, nil, err
		}
		if err := writePair(p.Dir, leaf, kp.Cert, kp.Key); err != nil {
			return nil, nil, nil, err
		}
	}
	if ca, err = os.ReadFile(p.Cert(AddonsCAName)); err != nil {
		return nil, nil, nil, err
	}
	if cert, err = os.ReadFile(p.Cert(leaf)); err != nil {
		return nil, nil, nil, err
	}
	key, err = os.ReadFile(p.Key(leaf))
	return ca, cert, key, err
}
