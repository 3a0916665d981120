package pki

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"os"
)

// Kubeconfig renders a kubeconfig with embedded client certificate data.
func Kubeconfig(clusterName, server string, caPEM, certPEM, keyPEM []byte, user string) []byte {
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster:
    server: %[2]s
    certificate-authority-data: %[3]s
users:
- name: %[6]s
  user:
    client-certificate-data: %[4]s
    client-key-data: %[5]s
contexts:
- name: %[6]s@%[1]s
  context:
    cluster: %[1]s
    user: %[6]s
current-context: %[6]s@%[1]s
`, clusterName, server, b64(caPEM), b64(certPEM), b64(keyPEM), user)
}

// KubeconfigFor renders the kubeconfig of the client certificate NAME, signed
// by the cluster CA, for server; it trusts the cluster's trust bundle.
func (p ClusterPKI) KubeconfigFor(clusterName, name, server string) ([]byte, error) {
	ca, err := os.ReadFile(p.TrustBundle())
	if err != nil {
		return nil, err
	}
	cert, err := os.ReadFile(p.Cert(name))
	if err != nil {
		return nil, err
	}
	key, err := os.ReadFile(p.Key(name))
	if err != nil {
		return nil, err
	}
	if _, err := tls.X509KeyPair(cert, key); err != nil {
		return nil, fmt.Errorf("%s: %w (being replaced?)", name, err)
	}
	return Kubeconfig(clusterName, server, ca, cert, key, name), nil
}

// WriteKubeconfig writes the kubeconfig of NAME to p.Kubeconfig(NAME).
func (p ClusterPKI) WriteKubeconfig(clusterName, name, server string) error {
	data, err := p.KubeconfigFor(clusterName, name, server)
	if err != nil {
		return err
	}
	if old, err := os.ReadFile(p.Kubeconfig(name)); err == nil && string(old) == string(data) {
		return nil
	}
	return writeSecretFile(p.Kubeconfig(name), data)
}

// TrustBundle is the file of every CA a client of the cluster's API
// trusts: the cluster CA, and both CAs while it rotates.
func (p ClusterPKI) TrustBundle() string { return p.Cert(CABundleName) }
