package pki

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"time"
)

// Rotation of the cluster CA, the one tenants see (kubeconfigs, kubelets,
// the kube-root-ca.crt of every namespace). Every party that verifies
// with it reads the trust bundle, ca-bundle.crt, never ca.crt itself;
// ca.crt and ca.key are the pair that signs.
//
// Phase 1, add: a new CA (ca-next) joins the bundle, so every server and
// client trusts both before anything is signed with the new one.
// Phase 1, reissue: the new CA signs (ca.crt/ca.key), the old one stays in
// the bundle (ca-previous), every leaf is issued again, and serving
// certificates carry the new CA certified by the old one (ca-cross), so a
// client that still has only the old CA verifies them too: old kubeconfigs
// keep working. Phase 2, drop: the old CA and the cross certificate go;
// what only the old CA signed or trusts stops working.
const (
	CABundleName   = "ca-bundle"
	NextCAName     = "ca-next"
	PreviousCAName = "ca-previous"
	CrossCAName    = "ca-cross"
)

// Stages of a CA rotation, applied by RotateCA.
const (
	CAStageAdd     = "add"
	CAStageReissue = "reissue"
	CAStageDrop    = "drop"
)

// RotateCA applies one stage of a rotation of the cluster CA; commonName
// names a new CA. Each stage is idempotent and survives a crash at any
// point. The leaves are issued again by EnsureCluster, which calls it.
func (p ClusterPKI) RotateCA(stage, commonName string) error {
	switch stage {
	case CAStageAdd:
		if exists(p.Cert(PreviousCAName)) {
			return nil // reissued already: the new CA signs
		}
		_, err := ensureCA(p.Dir, NextCAName, commonName)
		return err
	case CAStageReissue:
		return p.promoteNextCA()
	case CAStageDrop:
		for _, f := range []string{p.Cert(CrossCAName), p.Cert(PreviousCAName), p.Cert(NextCAName), p.Key(NextCAName)} {
			if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unknown CA rotation stage %q", stage)
}

// promoteNextCA makes the new CA the signing one. The old certificate and
// the cross certificate are written first, while ca.crt/ca.key are still
// the old pair; a crash after that finds ca-previous and only finishes
// the swap.
func (p ClusterPKI) promoteNextCA() error {
	if !exists(p.Cert(NextCAName)) || !exists(p.Key(NextCAName)) {
		return nil // promoted already (or never added)
	}
	nextCert, nextKey, err := loadPair(p.Dir, NextCAName)
	if err != nil {
		return err
	}
	if !exists(p.Cert(PreviousCAName)) {
		oldCert, oldKey, err := loadPair(p.Dir, CAName)
		if err != nil {
			return err
		}
		cross, err := crossSign(&CA{Cert: oldCert, Key: oldKey}, nextCert)
		if err != nil {
			return err
		}
		if err := writeSecretFile(p.Cert(CrossCAName), CertPEM(cross)); err != nil {
			return err
		}
		if err := writeSecretFile(p.Cert(PreviousCAName), CertPEM(oldCert)); err != nil {
			return err
		}
	}
	if err := writePair(p.Dir, CAName, nextCert, nextKey); err != nil {
		return err
	}
	for _, f := range []string{p.Cert(NextCAName), p.Key(NextCAName)} {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

// crossSign certifies next's key and subject with old: a client that
// trusts only old verifies a chain leaf -> cross -> old.
func crossSign(old *CA, next *x509.Certificate) (*x509.Certificate, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	notAfter := next.NotAfter
	if old.Cert.NotAfter.Before(notAfter) {
		notAfter = old.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               next.Subject,
		SubjectKeyId:          next.SubjectKeyId,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              notAfter,
		KeyUsage:              next.KeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, old.Cert, next.PublicKey, old.Key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// EnsureTrustBundle writes the bundle of every CA the cluster trusts: the
// signing one, and during a rotation the next or the previous one. The
// machine provider calls it too: a cluster from before the bundle existed
// gets it before its control plane's next reconcile.
func (p ClusterPKI) EnsureTrustBundle() error {
	var bundle []byte
	for _, name := range []string{CAName, NextCAName, PreviousCAName} {
		data, err := os.ReadFile(p.Cert(name))
		if os.IsNotExist(err) && name != CAName {
			continue
		}
		if err != nil {
			return err
		}
		bundle = append(bundle, data...)
	}
	if old, err := os.ReadFile(p.Cert(CABundleName)); err == nil && bytes.Equal(old, bundle) {
		return nil
	}
	return writeSecretFile(p.Cert(CABundleName), bundle)
}

// servingChain is what a serving certificate of the cluster CA carries
// after its leaf: the cross certificate while one exists.
func (p ClusterPKI) servingChain() ([]byte, error) {
	data, err := os.ReadFile(p.Cert(CrossCAName))
	if os.IsNotExist(err) {
		return nil, nil
	}
	return data, err
}

// ensureLeafChain keeps a leaf's certificate file its leaf followed by
// chain, rewriting only the file (never the key) when the chain changed.
func (p ClusterPKI) ensureLeafChain(name string, chain []byte) error {
	data, err := os.ReadFile(p.Cert(name))
	if err != nil {
		return err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return fmt.Errorf("%s: not PEM", name)
	}
	want := append(pem.EncodeToMemory(block), chain...)
	if bytes.Equal(data, want) {
		return nil
	}
	return writeSecretFile(p.Cert(name), want)
}

// signedBy says whether the certificate file NAME's leaf was signed by ca.
func (p ClusterPKI) signedBy(name string, ca *CA) bool {
	cert, _, err := loadPair(p.Dir, name)
	return err == nil && cert.CheckSignatureFrom(ca.Cert) == nil
}

// NodeTrustDigest names the trust a node's processes must run with: the
// bundle they verify with and the CA their client certificates must be
// signed by. It changes at every stage of a CA rotation, and only then.
func (p ClusterPKI) NodeTrustDigest() (string, error) {
	h := sha256.New()
	for _, name := range []string{CABundleName, CAName} {
		data, err := os.ReadFile(p.Cert(name))
		if err != nil {
			return "", err
		}
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// SignedByCA says whether the first certificate in certPEM was signed by
// the cluster CA that signs now.
func (p ClusterPKI) SignedByCA(certPEM []byte) bool {
	ca, _, err := loadPair(p.Dir, CAName)
	if err != nil {
		return false
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return false
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	return err == nil && cert.CheckSignatureFrom(ca) == nil
}

// IssueNodeClient issues a kubelet client certificate (system:node:NAME in
// system:nodes) from the cluster CA, as the CSR signer would: a node's
// identity renewed by a CA rotation without a new bootstrap.
func (p ClusterPKI) IssueNodeClient(nodeName string) (certPEM, keyPEM []byte, err error) {
	cert, key, err := loadPair(p.Dir, CAName)
	if err != nil {
		return nil, nil, err
	}
	kp, err := (&CA{Cert: cert, Key: key}).Issue(CertSpec{CommonName: "system:node:" + nodeName, Organization: []string{"system:nodes"}, Client: true})
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = KeyPEM(kp.Key)
	return CertPEM(kp.Cert), keyPEM, err
}

// IssueNodeServing issues a kubelet serving certificate for a node's name
// and address from the cluster CA, as the CSR signer would for a
// serverTLSBootstrap kubelet.
func (p ClusterPKI) IssueNodeServing(nodeName string, ip net.IP) (certPEM, keyPEM []byte, err error) {
	cert, key, err := loadPair(p.Dir, CAName)
	if err != nil {
		return nil, nil, err
	}
	kp, err := (&CA{Cert: cert, Key: key}).Issue(CertSpec{CommonName: "system:node:" + nodeName, Organization: []string{"system:nodes"},
		DNSNames: []string{nodeName}, IPs: []net.IP{ip}, Server: true})
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = KeyPEM(kp.Key)
	return CertPEM(kp.Cert), keyPEM, err
}
