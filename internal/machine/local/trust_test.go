package local

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lotse/lotse/internal/machine"
	"github.com/lotse/lotse/internal/pki"
)

func ensurePKI(t *testing.T, dir, caStage string) pki.ClusterPKI {
	t.Helper()
	p, err := pki.EnsureCluster(dir, pki.ClusterParams{Name: "c", ServiceCIDR: "10.96.0.0/16", CAStage: caStage})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func leafOf(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestEnsureKubeletTrust: through a rotation of the cluster CA the node's
// trust digest changes at every stage; once the new CA signs, the
// kubelet's client and serving certificates are issued again by it (same
// identity), and its kubeconfig trusts the bundle. Nothing changes when
// nothing rotated.
func TestEnsureKubeletTrust(t *testing.T) {
	dir := t.TempDir()
	p := ensurePKI(t, filepath.Join(dir, "pki"), "")
	m := &Machine{Spec: machine.Spec{Name: "n1", PKI: p, APIServer: "https://10.250.0.1:6443"}, Dir: filepath.Join(dir, "m")}
	certDir := m.path("pki")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		t.Fatal(err)
	}
	nodeIP := net.ParseIP("10.250.0.2")
	// What a bootstrapped kubelet has: certificates of the current CA.
	for _, f := range []struct {
		link, file string
		issue      func() ([]byte, []byte, error)
	}{
		{kubeletClientCurrent, "kubelet-client-1.pem", func() ([]byte, []byte, error) { return p.IssueNodeClient("n1") }},
		{kubeletServerCurrent, "kubelet-server-1.pem", func() ([]byte, []byte, error) { return p.IssueNodeServing("n1", nodeIP) }},
	} {
		c, k, err := f.issue()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(certDir, f.file), append(c, k...), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(f.file, filepath.Join(certDir, f.link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(m.path("kubelet.kubeconfig"), []byte("written by the kubelet"), 0o600); err != nil {
		t.Fatal(err)
	}
	before, beforeEnv, err := ensureKubeletTrust(m, nodeIP)
	if err != nil {
		t.Fatal(err)
	}
	if again, againEnv, _ := ensureKubeletTrust(m, nodeIP); again != before || againEnv != beforeEnv || before == "" {
		t.Fatalf("the digests changed without a rotation (or none reported: %q)", before)
	}
	if target, _ := os.Readlink(filepath.Join(certDir, kubeletClientCurrent)); target != "kubelet-client-1.pem" {
		t.Fatalf("without a rotation the client certificate was replaced (%s)", target)
	}
	digests, envs := map[string]bool{before: true}, map[string]bool{beforeEnv: true}
	for _, stage := range []string{pki.CAStageAdd, pki.CAStageReissue, pki.CAStageDrop} {
		ensurePKI(t, filepath.Join(dir, "pki"), stage)
		d, env, err := ensureKubeletTrust(m, nodeIP)
		if err != nil {
			t.Fatal(err)
		}
		if digests[d] || envs[env] {
			t.Errorf("%s: a trust digest did not change (reported %v, kubelet's %v)", stage, !digests[d], !envs[env])
		}
		digests[d], envs[env] = true, true
		if stage == pki.CAStageReissue {
			if n := len(certsOf(t, filepath.Join(certDir, kubeletServerCurrent))); n != 2 {
				t.Errorf("reissue: the serving certificate file has %d certificates, want the leaf and the cross-signed CA", n)
			}
			if old, _ := filepath.Glob(filepath.Join(certDir, "kubelet-*-lotse-*.pem")); len(old) != 2 {
				t.Errorf("reissue: issued files %v, want one client and one serving", old)
			}
		}
		kc, _ := os.ReadFile(m.path("kubelet.kubeconfig"))
		if !strings.Contains(string(kc), "client-certificate: "+filepath.Join(certDir, kubeletClientCurrent)) {
			t.Errorf("%s: kubeconfig does not use the current client certificate:\n%s", stage, kc)
		}
	}
	ca := leafOf(t, p.Cert(pki.CAName))
	for _, link := range []string{kubeletClientCurrent, kubeletServerCurrent} {
		c := leafOf(t, filepath.Join(certDir, link))
		if err := c.CheckSignatureFrom(ca); err != nil {
			t.Errorf("%s is not signed by the new CA: %v", link, err)
		}
		if c.Subject.CommonName != "system:node:n1" {
			t.Errorf("%s: subject %s", link, c.Subject)
		}
	}
	if s := leafOf(t, filepath.Join(certDir, kubeletServerCurrent)); len(s.IPAddresses) != 1 || !s.IPAddresses[0].Equal(nodeIP) {
		t.Errorf("serving certificate addresses %v, want %s", s.IPAddresses, nodeIP)
	}
}

func certsOf(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*x509.Certificate
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			return out
		}
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, c)
		}
	}
}
