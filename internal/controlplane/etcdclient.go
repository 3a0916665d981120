package controlplane

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/lotse/lotse/internal/pki"
)

// EtcdAdminClient connects to etcd endpoints with a cluster's etcd admin
// certificate.
func EtcdAdminClient(p pki.ClusterPKI, endpoints ...string) (*clientv3.Client, error) {
	caPEM, err := os.ReadFile(p.Cert(pki.EtcdCAName))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(p.Cert(pki.EtcdAdminName), p.Key(pki.EtcdAdminName))
	if err != nil {
		return nil, err
	}
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 2 * time.Second,
		TLS:         &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		Logger:      zap.NewNop(),
	})
}

// FindEtcdMember returns the member with peerURL, nil if there is none.
func FindEtcdMember(members []*etcdserverpb.Member, peerURL string) *etcdserverpb.Member {
	for _, m := range members {
		if slices.Contains(m.PeerURLs, peerURL) {
			return m
		}
	}
	return nil
}
