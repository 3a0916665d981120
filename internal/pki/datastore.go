package pki

import (
	"bytes"
	"fmt"
	"os"

	"github.com/lotse/lotse/internal/fsutil"
)

// The PKI of a shared datastore: one etcd that keeps the data of many
// clusters. Its CA is its own, not any cluster's, so a cluster's CA
// cannot sign a certificate that opens another cluster's data; each
// cluster's API server gets a client certificate whose common name is
// the cluster's etcd user (etcd takes the user from the common name).

// File names of a cluster's credentials for the shared datastore, kept
// in the cluster's PKI directory.
const (
	// DatastoreCAName is a copy of the shared datastore's CA certificate.
	DatastoreCAName = "datastore-ca"
	// DatastoreClientName is the cluster's client certificate.
	DatastoreClientName = "datastore-client"
)

// EnsureDatastore creates every missing file of a shared datastore's PKI
// in dir: the etcd CA, the members' serving and peer certificates and
// Lotse's own client certificate (EtcdAdminName, the datastore's root).
func EnsureDatastore(dir, name string) (ClusterPKI, error) {
	p := ClusterPKI{Dir: dir}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return p, err
	}
	ca, err := ensureCA(dir, EtcdCAName, name+"-"+EtcdCAName)
	if err != nil {
		return p, err
	}
	dns, ips := splitHosts([]string{"127.0.0.1", "localhost"})
	leaves := []struct {
		name string
		spec CertSpec
	}{
		{EtcdServerName, CertSpec{CommonName: "etcd-server", DNSNames: dns, IPs: ips, Server: true, Client: true}},
		{EtcdPeerName, CertSpec{CommonName: "etcd-peer", DNSNames: dns, IPs: ips, Server: true, Client: true}},
		{EtcdAdminName, CertSpec{CommonName: DatastoreRootUser, Client: true}},
	}
	for _, l := range leaves {
		if exists(p.Cert(l.name)) && exists(p.Key(l.name)) {
			continue
		}
		kp, err := ca.Issue(l.spec)
		if err != nil {
			return p, fmt.Errorf("%s: %w", l.name, err)
		}
		if err := writePair(dir, l.name, kp.Cert, kp.Key); err != nil {
			return p, err
		}
	}
	return p, nil
}

// DatastoreRootUser is the etcd user of Lotse's own client certificate on
// a shared datastore: etcd's "root", the one user that may administer it
// once authentication is on.
const DatastoreRootUser = "root"

// EnsureDatastoreClient writes into the cluster PKI target a client
// certificate of the datastore for the etcd user, and a copy of the
// datastore's CA; a certificate for another user or from another CA is
// replaced.
func (p ClusterPKI) EnsureDatastoreClient(target ClusterPKI, user string) error {
	ca, err := ensureCA(p.Dir, EtcdCAName, "")
	if err != nil {
		return err
	}
	caPEM := CertPEM(ca.Cert)
	if old, err := os.ReadFile(target.Cert(DatastoreCAName)); err != nil || !bytes.Equal(old, caPEM) {
		if err := os.MkdirAll(target.Dir, 0o700); err != nil {
			return err
		}
		if err := fsutil.WriteFileAtomic(target.Cert(DatastoreCAName), caPEM, 0o644); err != nil {
			return err
		}
	}
	if cert, _, err := loadPair(target.Dir, DatastoreClientName); err == nil &&
		cert.Subject.CommonName == user && cert.CheckSignatureFrom(ca.Cert) == nil {
		return nil
	}
	kp, err := ca.Issue(CertSpec{CommonName: user, Client: true})
	if err != nil {
		return err
	}
	return writePair(target.Dir, DatastoreClientName, kp.Cert, kp.Key)
}
