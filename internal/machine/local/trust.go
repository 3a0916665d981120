package local

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lotse/lotse/internal/fsutil"
	"github.com/lotse/lotse/internal/pki"
)

// trustEnv carries the digest of what a node process trusts and presents
// (see ensureKubeletTrust) in its spec.
const trustEnv = "LOTSE_TRUST"

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])[:16]
}

// The kubelet keeps its credentials in its certificate directory: the
// client certificate (and key) it bootstrapped or renewed, linked as
// kubelet-client-current.pem, and its serving certificate, linked as
// kubelet-server-current.pem.
const (
	kubeletClientCurrent = "kubelet-client-current.pem"
	kubeletServerCurrent = "kubelet-server-current.pem"
)

// ensureKubeletTrust keeps a node's kubelet in step with the cluster CA.
// Its kubeconfig trusts the cluster's bundle; a client or serving
// certificate the signing CA did not sign (the CA rotated) is replaced by
// one it signs, issued here rather than asked for again (a CSR could
// reach a controller-manager that still signs with the old CA). It
// returns the trust digest the node reports (pki.NodeTrustDigest, "" while
// a certificate of another CA is in use) and the digest the kubelet's
// spec carries: the trust and the certificates Lotse issued, so the
// kubelet restarts whenever either changes (it reads neither again).
func ensureKubeletTrust(m *Machine, nodeIP net.IP) (report, env string, err error) {
	trust, err := m.PKI.NodeTrustDigest()
	if err != nil {
		return "", "", err
	}
	certDir := m.path("pki")
	cross, err := os.ReadFile(m.PKI.Cert(pki.CrossCAName))
	if err != nil && !os.IsNotExist(err) {
		return "", "", err
	}
	issued := trust
	current := true
	for _, c := range []struct {
		link, prefix string
		issue        func() ([]byte, []byte, error)
		chain        []byte
	}{
		{kubeletClientCurrent, "kubelet-client-lotse-", func() ([]byte, []byte, error) { return m.PKI.IssueNodeClient(m.Name) }, nil},
		// Serving certificates carry the new CA certified by the old one,
		// as the control plane's do, for clients that know only the old.
		{kubeletServerCurrent, "kubelet-server-lotse-", func() ([]byte, []byte, error) { return m.PKI.IssueNodeServing(m.Name, nodeIP) }, cross},
	} {
		data, err := os.ReadFile(filepath.Join(certDir, c.link))
		if os.IsNotExist(err) {
			continue // not bootstrapped yet: the kubelet asks for it
		}
		if err != nil {
			return "", "", err
		}
		if !m.PKI.SignedByCA(data) {
			cert, key, err := c.issue()
			if err != nil {
				return "", "", err
			}
			name := fmt.Sprintf("%s%d.pem", c.prefix, time.Now().UnixNano())
			if err := fsutil.WriteFileAtomic(filepath.Join(certDir, name), append(append(cert, c.chain...), key...), 0o600); err != nil {
				return "", "", err
			}
			if err := relink(certDir, name, c.link); err != nil {
				return "", "", err
			}
			removeIssuedExcept(certDir, c.prefix, name)
			if data, err = os.ReadFile(filepath.Join(certDir, c.link)); err != nil {
				return "", "", err
			}
		}
		current = current && m.PKI.SignedByCA(data)
		if target, err := os.Readlink(filepath.Join(certDir, c.link)); err == nil && strings.HasPrefix(target, c.prefix) {
			issued += "/" + target
		}
	}
	// The kubeconfig the kubelet wrote after its bootstrap holds the CA
	// of that time; once it exists, Lotse keeps it.
	if _, err := os.Stat(m.path("kubelet.kubeconfig")); err == nil {
		bundle, err := os.ReadFile(m.PKI.TrustBundle())
		if err != nil {
			return "", "", err
		}
		if err := writeIfChanged(m.path("kubelet.kubeconfig"), kubeletKubeconfig(m, bundle)); err != nil {
			return "", "", err
		}
	}
	if current {
		report = trust
	}
	return report, digest([]byte(issued)), nil
}

// removeIssuedExcept removes the certificates Lotse issued before keep
// (each holds a private key).
func removeIssuedExcept(dir, prefix, keep string) {
	old, _ := filepath.Glob(filepath.Join(dir, prefix+"*.pem"))
	for _, f := range old {
		if filepath.Base(f) != keep {
			_ = os.Remove(f)
		}
	}
}

// relink points the symlink name in dir at target, atomically.
func relink(dir, target, name string) error {
	tmp := filepath.Join(dir, name+".lotse-tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}

func kubeletKubeconfig(m *Machine, bundle []byte) string {
	current := filepath.Join(m.path("pki"), kubeletClientCurrent)
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: default-cluster
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: default-auth
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: default-context
  context: {cluster: default-cluster, namespace: default, user: default-auth}
current-context: default-context
`, m.APIServer, b64(bundle), current, current)
}
