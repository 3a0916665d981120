package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

var testParams = ClusterParams{
	Name:               "demo",
	ServiceCIDR:        "10.96.0.0/16",
	APIServerHosts:     []string{"api.demo.example", "192.0.2.10", "127.0.0.1"},
	EtcdHosts:          []string{"etcd-0.demo.local", "192.0.2.20"},
	EncryptionProvider: ProviderAESGCM,
	EncryptedResources: []string{"configmaps"},
}

// leafSpecs is what every leaf certificate must look like.
var leafSpecs = []struct {
	name, ca string
	cn       string
	org      []string
	eku      []x509.ExtKeyUsage
}{
	{APIServerName, CAName, "kube-apiserver", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
	{APIServerKubeletName, CAName, "kube-apiserver-kubelet-client", []string{"system:masters"}, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	{AdminName, CAName, "lotse-admin", []string{"system:masters"}, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	{ControllerMgrName, CAName, "system:kube-controller-manager", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	{SchedulerName, CAName, "system:kube-scheduler", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	{KubeProxyName, CAName, "system:kube-proxy", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	{ControllerMgrServing, CAName, "kube-controller-manager", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
	{SchedulerServing, CAName, "kube-scheduler", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
	{CloudControllerName, CAName, CloudControllerUser, nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	{CloudControllerServing, CAName, "cloud-controller-manager", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
	{FrontProxyClientName, FrontProxyCAName, "front-proxy-client", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	{EtcdServerName, EtcdCAName, "etcd-server", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
	{EtcdPeerName, EtcdCAName, "etcd-peer", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
	{APIServerEtcdName, EtcdCAName, "kube-apiserver-etcd-client", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	{EtcdAdminName, EtcdCAName, "lotse-etcd-admin", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	{KonnectivityServerName, KonnectivityCAName, "konnectivity-server", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
	{KonnectivityAgentName, KonnectivityCAName, "system:konnectivity-agent", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
}

var caNames = []string{CAName, EtcdCAName, FrontProxyCAName, KonnectivityCAName}

// expectedFiles lists every file EnsureCluster must create for provider.
func expectedFiles(provider string) []string {
	var fs []string
	for _, n := range caNames {
		fs = append(fs, n+".crt", n+".key")
	}
	for _, l := range leafSpecs {
		fs = append(fs, l.name+".crt", l.name+".key")
	}
	fs = append(fs, CABundleName+".crt", "sa.key", "sa.pub", EncryptionConfigFile, EncryptionKeysFile, "encryption-key-"+provider)
	sort.Strings(fs)
	return fs
}

func ensure(t *testing.T, dir string, p ClusterParams) ClusterPKI {
	t.Helper()
	pk, err := EnsureCluster(dir, p)
	if err != nil {
		t.Fatalf("EnsureCluster: %v", err)
	}
	if pk.Dir != dir {
		t.Fatalf("ClusterPKI.Dir = %s, want %s", pk.Dir, dir)
	}
	return pk
}

// snapshot reads every file of dir.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = data
	}
	return out
}

func names(m map[string][]byte) []string {
	var ns []string
	for n := range m {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, rest := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("%s: not a single PEM certificate", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

func readKey(t *testing.T, path string) *ecdsa.PrivateKey {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PRIVATE KEY" {
		t.Fatalf("%s: not a PKCS#8 PEM key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("%s: key is %T, want ECDSA", path, k)
	}
	return ek
}

func TestEnsureClusterCreatesEveryFile(t *testing.T) {
	for _, provider := range []string{"", ProviderAESCBC, ProviderAESGCM, ProviderSecretbox} {
		t.Run("provider="+provider, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "pki")
			p := testParams
			p.EncryptionProvider = provider
			ensure(t, dir, p)
			want := provider
			if want == "" {
				want = ProviderAESCBC // the default
			}
			got := names(snapshot(t, dir))
			if exp := expectedFiles(want); !reflect.DeepEqual(got, exp) {
				t.Errorf("files = %v\nwant    %v", got, exp)
			}
			fi, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			if m := fi.Mode().Perm(); m != 0o700 {
				t.Errorf("directory mode %o, want 700", m)
			}
			for _, n := range got {
				fi, err := os.Stat(filepath.Join(dir, n))
				if err != nil {
					t.Fatal(err)
				}
				if m := fi.Mode().Perm(); m != 0o600 {
					t.Errorf("%s: mode %o, want 600", n, m)
				}
			}
			// Every key belongs to its certificate.
			for _, n := range append(append([]string{}, caNames...), leafNames()...) {
				c := readCert(t, filepath.Join(dir, n+".crt"))
				k := readKey(t, filepath.Join(dir, n+".key"))
				if !k.PublicKey.Equal(c.PublicKey) {
					t.Errorf("%s.key does not match %s.crt", n, n)
				}
			}
			// sa.pub is the public half of sa.key.
			sk := readKey(t, filepath.Join(dir, "sa.key"))
			pubPEM, _ := os.ReadFile(filepath.Join(dir, "sa.pub"))
			pb, _ := pem.Decode(pubPEM)
			if pb == nil || pb.Type != "PUBLIC KEY" {
				t.Fatal("sa.pub is not a PEM public key")
			}
			pub, err := x509.ParsePKIXPublicKey(pb.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if !sk.PublicKey.Equal(pub) {
				t.Error("sa.pub does not match sa.key")
			}
			// The encryption key is 32 random bytes, and it is the one in the config.
			raw, _ := os.ReadFile(filepath.Join(dir, "encryption-key-"+want))
			key, err := base64.StdEncoding.DecodeString(string(raw))
			if err != nil || len(key) != 32 {
				t.Errorf("encryption key %q: %d bytes, err %v; want 32 bytes of base64", raw, len(key), err)
			}
			cfg, _ := os.ReadFile(filepath.Join(dir, EncryptionConfigFile))
			if wantCfg := RenderEncryptionConfig(want, string(raw), p.EncryptedResources); string(cfg) != wantCfg {
				t.Errorf("%s =\n%s\nwant\n%s", EncryptionConfigFile, cfg, wantCfg)
			}
		})
	}
}

func leafNames() []string {
	var ns []string
	for _, l := range leafSpecs {
		ns = append(ns, l.name)
	}
	return ns
}

func TestEnsureClusterCertificates(t *testing.T) {
	dir := t.TempDir()
	pk := ensure(t, dir, testParams)

	pools := map[string]*x509.CertPool{}
	for _, n := range caNames {
		ca := readCert(t, pk.Cert(n))
		if !ca.IsCA || !ca.BasicConstraintsValid || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
			t.Errorf("%s is not a signing CA", n)
		}
		if want := testParams.Name + "-" + n; ca.Subject.CommonName != want {
			t.Errorf("%s CN = %q, want %q", n, ca.Subject.CommonName, want)
		}
		if err := ca.CheckSignatureFrom(ca); err != nil {
			t.Errorf("%s is not self-signed: %v", n, err)
		}
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		pools[n] = pool
	}

	for _, l := range leafSpecs {
		t.Run(l.name, func(t *testing.T) {
			c := readCert(t, pk.Cert(l.name))
			if c.IsCA {
				t.Error("leaf certificate is a CA")
			}
			if c.Subject.CommonName != l.cn {
				t.Errorf("CN = %q, want %q", c.Subject.CommonName, l.cn)
			}
			if !slices.Equal(c.Subject.Organization, l.org) {
				t.Errorf("O = %v, want %v", c.Subject.Organization, l.org)
			}
			if !slices.Equal(c.ExtKeyUsage, l.eku) {
				t.Errorf("ExtKeyUsage = %v, want %v", c.ExtKeyUsage, l.eku)
			}
			for _, ca := range caNames {
				for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
					_, err := c.Verify(x509.VerifyOptions{Roots: pools[ca], KeyUsages: []x509.ExtKeyUsage{usage}})
					want := ca == l.ca && slices.Contains(l.eku, usage)
					if want && err != nil {
						t.Errorf("does not verify against %s for usage %v: %v", ca, usage, err)
					}
					if !want && err == nil {
						t.Errorf("unexpectedly verifies against %s for usage %v", ca, usage)
					}
				}
			}
		})
	}
}

func hasIP(ips []net.IP, s string) bool {
	want := net.ParseIP(s)
	for _, ip := range ips {
		if ip.Equal(want) {
			return true
		}
	}
	return false
}

func TestEnsureClusterSANs(t *testing.T) {
	dir := t.TempDir()
	pk := ensure(t, dir, testParams)
	pool := x509.NewCertPool()
	pool.AddCert(readCert(t, pk.Cert(CAName)))
	etcdPool := x509.NewCertPool()
	etcdPool.AddCert(readCert(t, pk.Cert(EtcdCAName)))

	tests := []struct {
		cert     string
		pool     *x509.CertPool
		ips      []string
		dns      []string
		notNames []string
	}{
		{
			cert: APIServerName, pool: pool,
			ips:      []string{"127.0.0.1", "10.96.0.1", "192.0.2.10"},
			dns:      []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "api.demo.example"},
			notNames: []string{"10.96.0.0", "192.0.2.20", "etcd-0.demo.local", "example.com"},
		},
		{
			cert: EtcdServerName, pool: etcdPool,
			ips:      []string{"127.0.0.1", "192.0.2.20"},
			dns:      []string{"localhost", "etcd-0.demo.local"},
			notNames: []string{"10.96.0.1", "kubernetes.default.svc", "api.demo.example"},
		},
		{
			cert: EtcdPeerName, pool: etcdPool,
			ips: []string{"127.0.0.1", "192.0.2.20"},
			dns: []string{"localhost", "etcd-0.demo.local"},
		},
		{
			cert: ControllerMgrServing, pool: pool,
			ips:      []string{"127.0.0.1"},
			dns:      []string{"localhost"},
			notNames: []string{"10.96.0.1"},
		},
		{
			cert: SchedulerServing, pool: pool,
			ips: []string{"127.0.0.1"},
			dns: []string{"localhost"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.cert, func(t *testing.T) {
			c := readCert(t, pk.Cert(tt.cert))
			if len(c.IPAddresses) != len(tt.ips) {
				t.Errorf("IP SANs %v, want exactly %v (no duplicates)", c.IPAddresses, tt.ips)
			}
			for _, ip := range tt.ips {
				if !hasIP(c.IPAddresses, ip) {
					t.Errorf("IP SAN %s missing from %v", ip, c.IPAddresses)
				}
			}
			if !slices.Equal(sorted(c.DNSNames), sorted(tt.dns)) {
				t.Errorf("DNS SANs %v, want %v", c.DNSNames, tt.dns)
			}
			// A TLS client checking the host name accepts every SAN and nothing else.
			for _, n := range append(append([]string{}, tt.ips...), tt.dns...) {
				if _, err := c.Verify(x509.VerifyOptions{Roots: tt.pool, DNSName: n}); err != nil {
					t.Errorf("does not verify for host %s: %v", n, err)
				}
			}
			for _, n := range tt.notNames {
				if _, err := c.Verify(x509.VerifyOptions{Roots: tt.pool, DNSName: n}); err == nil {
					t.Errorf("unexpectedly verifies for host %s", n)
				}
			}
		})
	}
}

func sorted(s []string) []string {
	out := append([]string{}, s...)
	sort.Strings(out)
	return out
}

func TestFirstIP(t *testing.T) {
	tests := []struct {
		cidr, want string
		wantErr    bool
	}{
		{cidr: "10.96.0.0/16", want: "10.96.0.1"},
		{cidr: "10.96.0.0/12", want: "10.96.0.1"},
		{cidr: "10.100.0.0/12", want: "10.96.0.1"}, // masked first
		{cidr: "172.20.5.0/24", want: "172.20.5.1"},
		{cidr: "fd00:10:96::/108", want: "fd00:10:96::1"},
		{cidr: "", wantErr: true},
		{cidr: "10.96.0.0", wantErr: true},
		{cidr: "not-a-cidr/16", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.cidr, func(t *testing.T) {
			ip, err := firstIP(tt.cidr)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("firstIP(%q) = %v, want an error", tt.cidr, ip)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !ip.Equal(net.ParseIP(tt.want)) {
				t.Errorf("firstIP(%q) = %v, want %s", tt.cidr, ip, tt.want)
			}
		})
	}
}

func TestEnsureClusterServiceIP(t *testing.T) {
	p := testParams
	p.ServiceCIDR = "172.20.0.0/16"
	pk := ensure(t, t.TempDir(), p)
	c := readCert(t, pk.Cert(APIServerName))
	if !hasIP(c.IPAddresses, "172.20.0.1") || hasIP(c.IPAddresses, "10.96.0.1") {
		t.Errorf("apiserver IP SANs %v, want the first IP of %s", c.IPAddresses, p.ServiceCIDR)
	}
}

func TestEnsureClusterErrors(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*ClusterParams)
		wantErr string
	}{
		{"bad service CIDR", func(p *ClusterParams) { p.ServiceCIDR = "10.96.0.0" }, "service CIDR"},
		{"empty service CIDR", func(p *ClusterParams) { p.ServiceCIDR = "" }, "service CIDR"},
		{"unknown provider", func(p *ClusterParams) { p.EncryptionProvider = "rot13" }, `unknown encryption provider "rot13"`},
		{"kms is not supported", func(p *ClusterParams) { p.EncryptionProvider = "kms" }, "unknown encryption provider"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testParams
			tt.mutate(&p)
			_, err := EnsureCluster(t.TempDir(), p)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("EnsureCluster error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestEnsureClusterIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	ensure(t, dir, testParams)
	before := snapshot(t, dir)
	ensure(t, dir, testParams)
	after := snapshot(t, dir)
	if !reflect.DeepEqual(names(before), names(after)) {
		t.Fatalf("files changed: before %v, after %v", names(before), names(after))
	}
	for n, data := range before {
		if !bytes.Equal(data, after[n]) {
			t.Errorf("%s changed on the second EnsureCluster", n)
		}
	}
}

func TestEnsureClusterReplacesOnlyMissingFiles(t *testing.T) {
	dir := t.TempDir()
	pk := ensure(t, dir, testParams)
	before := snapshot(t, dir)
	// A missing leaf key is reissued by the existing CA; nothing else changes.
	if err := os.Remove(pk.Key(AdminName)); err != nil {
		t.Fatal(err)
	}
	ensure(t, dir, testParams)
	after := snapshot(t, dir)
	for n, data := range before {
		changed := !bytes.Equal(data, after[n])
		want := n == AdminName+".crt" || n == AdminName+".key"
		if changed != want {
			t.Errorf("%s: changed=%t, want %t", n, changed, want)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(readCert(t, pk.Cert(CAName)))
	c := readCert(t, pk.Cert(AdminName))
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("reissued admin certificate does not verify against the existing CA: %v", err)
	}
	if !readKey(t, pk.Key(AdminName)).PublicKey.Equal(c.PublicKey) {
		t.Error("reissued admin key does not match its certificate")
	}
}

// A serving leaf is issued again when it lacks a name it is now reached
// by, and only then; no other file changes.
func TestEnsureClusterReissuesOnNewNames(t *testing.T) {
	with := func(change func(*ClusterParams)) ClusterParams {
		p := testParams
		p.APIServerHosts = slices.Clone(p.APIServerHosts)
		p.EtcdHosts = slices.Clone(p.EtcdHosts)
		change(&p)
		return p
	}
	cases := []struct {
		name    string
		params  ClusterParams
		changed []string // leaves issued again
		want    string   // a name the changed leaves now carry
	}{
		{"a load balancer's new address", with(func(p *ClusterParams) { p.APIServerHosts = append(p.APIServerHosts, "198.51.100.7") }),
			[]string{APIServerName, KonnectivityServerName}, "198.51.100.7"},
		{"a new DNS name", with(func(p *ClusterParams) { p.APIServerHosts = append(p.APIServerHosts, "api.new.example") }),
			[]string{APIServerName, KonnectivityServerName}, "api.new.example"},
		{"a new etcd member", with(func(p *ClusterParams) { p.EtcdHosts = append(p.EtcdHosts, "etcd-1.demo.local") }),
			[]string{EtcdServerName, EtcdPeerName}, "etcd-1.demo.local"},
		{"a name dropped", with(func(p *ClusterParams) { p.APIServerHosts = p.APIServerHosts[:1] }), nil, ""},
		{"the same names in another order", with(func(p *ClusterParams) { slices.Reverse(p.APIServerHosts) }), nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			pk := ensure(t, dir, testParams)
			before := snapshot(t, dir)
			ensure(t, dir, tc.params)
			after := snapshot(t, dir)
			for n, data := range before {
				leaf := strings.TrimSuffix(strings.TrimSuffix(n, ".crt"), ".key")
				want := slices.Contains(tc.changed, leaf) && leaf != n
				if changed := !bytes.Equal(data, after[n]); changed != want {
					t.Errorf("%s: changed=%t, want %t", n, changed, want)
				}
			}
			for _, leaf := range tc.changed {
				c := readCert(t, pk.Cert(leaf))
				ip := net.ParseIP(tc.want)
				if !slices.Contains(c.DNSNames, tc.want) && (ip == nil || !slices.ContainsFunc(c.IPAddresses, ip.Equal)) {
					t.Errorf("%s names %v %v, not %s", leaf, c.DNSNames, c.IPAddresses, tc.want)
				}
				if !readKey(t, pk.Key(leaf)).PublicKey.Equal(c.PublicKey) {
					t.Errorf("%s: key does not match its certificate", leaf)
				}
			}
			// Issued once, the names are kept.
			ensure(t, dir, tc.params)
			if again := snapshot(t, dir); !reflect.DeepEqual(again, after) {
				t.Error("a second EnsureCluster with the same names changed files")
			}
		})
	}
}

func TestEnsureClusterEncryptionChangesKeepKey(t *testing.T) {
	dir := t.TempDir()
	p := testParams
	p.EncryptionProvider = ProviderAESCBC
	pk := ensure(t, dir, p)
	key1, _ := os.ReadFile(pk.Path("encryption-key-aescbc"))

	p.EncryptedResources = []string{"configmaps", "leases.coordination.k8s.io"}
	ensure(t, dir, p)
	key2, _ := os.ReadFile(pk.Path("encryption-key-aescbc"))
	if !bytes.Equal(key1, key2) {
		t.Error("changing the encrypted resources changed the key")
	}
	cfg, _ := os.ReadFile(pk.Path(EncryptionConfigFile))
	if !strings.Contains(string(cfg), "leases.coordination.k8s.io") {
		t.Errorf("encryption config does not list the new resource:\n%s", cfg)
	}
	if !strings.Contains(string(cfg), string(key1)) {
		t.Error("encryption config does not use the existing key")
	}
}

// encryptionConfig mirrors apiserver.config.k8s.io/v1 EncryptionConfiguration.
type encryptionConfig struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Resources  []struct {
		Resources []string                    `json:"resources"`
		Providers []map[string]providerConfig `json:"providers"`
	} `json:"resources"`
}

type providerConfig struct {
	Keys []struct {
		Name   string `json:"name"`
		Secret string `json:"secret"`
	} `json:"keys,omitempty"`
}

func TestRenderEncryptionConfig(t *testing.T) {
	const key = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ="
	tests := []struct {
		provider  string
		resources []string
		want      []string
	}{
		{ProviderAESCBC, nil, []string{"secrets"}},
		{ProviderAESGCM, []string{"configmaps"}, []string{"secrets", "configmaps"}},
		{ProviderSecretbox, []string{"configmaps", "secrets", "configmaps", "leases.coordination.k8s.io"}, []string{"secrets", "configmaps", "leases.coordination.k8s.io"}},
		{ProviderAESCBC, []string{"secrets"}, []string{"secrets"}},
	}
	for _, tt := range tests {
		t.Run(tt.provider+"/"+strings.Join(tt.resources, ","), func(t *testing.T) {
			out := RenderEncryptionConfig(tt.provider, key, tt.resources)
			var cfg encryptionConfig
			if err := yaml.UnmarshalStrict([]byte(out), &cfg); err != nil {
				t.Fatalf("rendered config is not valid: %v\n%s", err, out)
			}
			if cfg.APIVersion != "apiserver.config.k8s.io/v1" || cfg.Kind != "EncryptionConfiguration" {
				t.Errorf("apiVersion/kind = %s/%s", cfg.APIVersion, cfg.Kind)
			}
			if len(cfg.Resources) != 1 {
				t.Fatalf("%d resource entries, want 1:\n%s", len(cfg.Resources), out)
			}
			r := cfg.Resources[0]
			if !slices.Equal(r.Resources, tt.want) {
				t.Errorf("resources = %v, want %v", r.Resources, tt.want)
			}
			if len(r.Providers) != 2 {
				t.Fatalf("%d providers, want 2 (%s, identity):\n%s", len(r.Providers), tt.provider, out)
			}
			first, ok := r.Providers[0][tt.provider]
			if !ok || len(r.Providers[0]) != 1 {
				t.Fatalf("first provider = %v, want only %s", r.Providers[0], tt.provider)
			}
			if len(first.Keys) != 1 || first.Keys[0].Name != "key1" || first.Keys[0].Secret != key {
				t.Errorf("%s keys = %+v, want key1 with the given secret", tt.provider, first.Keys)
			}
			if last, ok := r.Providers[1]["identity"]; !ok || len(r.Providers[1]) != 1 || len(last.Keys) != 0 {
				t.Errorf("last provider = %v, want identity: {}", r.Providers[1])
			}
		})
	}
}

func TestEnsureAddonServing(t *testing.T) {
	p := ClusterPKI{Dir: t.TempDir()}
	names := []string{"metrics-server.kube-system.svc", "metrics-server.kube-system.svc.cluster.local"}
	ca, cert, key, err := p.EnsureAddonServing("metrics-server", names)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: names[0]}); err != nil {
		t.Errorf("the certificate does not verify with the addons CA: %v", err)
	}
	_, again, _, err := p.EnsureAddonServing("metrics-server", names)
	if err != nil || string(again) != string(cert) {
		t.Errorf("a second call reissued the certificate (%v)", err)
	}
	_, other, _, err := p.EnsureAddonServing("metrics-server", names[:1])
	if err != nil || string(other) == string(cert) {
		t.Errorf("changed names kept the old certificate (%v)", err)
	}
	if fi, err := os.Stat(p.Key("addon-metrics-server")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v %v", fi.Mode(), err)
	}
}

// TestEnsureClusterProviderChange: a provider named in the spec never
// replaces the key a cluster has; it changes through a rotation, whose
// new key has the new provider while the old one still decrypts.
func TestEnsureClusterProviderChange(t *testing.T) {
	tests := []struct {
		name      string
		withState bool // false: a cluster from before encryption-keys.json
	}{
		{"with the key state", true},
		{"from before the key state", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := testParams
			p.EncryptionProvider = ProviderAESCBC
			pk := ensure(t, dir, p)
			old, _ := os.ReadFile(pk.Path("encryption-key-aescbc"))
			if !tt.withState {
				if err := os.Remove(pk.Path(EncryptionKeysFile)); err != nil {
					t.Fatal(err)
				}
			}
			p.EncryptionProvider = ProviderSecretbox
			ensure(t, dir, p)
			if got, err := pk.PrimaryEncryptionProvider(); err != nil || got != ProviderAESCBC {
				t.Fatalf("after a spec change the primary provider is %q (%v), want aescbc until a rotation", got, err)
			}
			if _, err := os.Stat(pk.Path("encryption-key-secretbox")); !os.IsNotExist(err) {
				t.Errorf("a secretbox key was made without a rotation (%v)", err)
			}

			p.EncryptionKeyStage = KeyStageAdd
			ensure(t, dir, p)
			p.EncryptionKeyStage = KeyStagePromote
			ensure(t, dir, p)
			if got, _ := pk.PrimaryEncryptionProvider(); got != ProviderSecretbox {
				t.Fatalf("after promote the primary provider is %q, want secretbox", got)
			}
			cfg, _ := os.ReadFile(pk.Path(EncryptionConfigFile))
			sb, cbc := strings.Index(string(cfg), "secretbox:"), strings.Index(string(cfg), "aescbc:")
			if sb < 0 || cbc < sb || !strings.Contains(string(cfg), strings.TrimSpace(string(old))) {
				t.Errorf("want secretbox first and the old aescbc key after it:\n%s", cfg)
			}
			p.EncryptionKeyStage = KeyStageDrop
			ensure(t, dir, p)
			cfg, _ = os.ReadFile(pk.Path(EncryptionConfigFile))
			if strings.Contains(string(cfg), "aescbc:") {
				t.Errorf("the old aescbc key is still configured after drop:\n%s", cfg)
			}
		})
	}
}
