package pki

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"testing"
	"time"
)

// certsIn parses every certificate of a PEM file.
func certsIn(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

// verifies says whether the serving certificate file (leaf and chain)
// verifies for 127.0.0.1 against roots alone.
func verifies(t *testing.T, certFile string, roots ...*x509.Certificate) bool {
	t.Helper()
	chain := certsIn(t, certFile)
	pool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: "localhost", CurrentTime: time.Now()})
	return err == nil
}

func clientVerifies(t *testing.T, certFile string, bundle string) bool {
	t.Helper()
	pool := x509.NewCertPool()
	for _, c := range certsIn(t, bundle) {
		pool.AddCert(c)
	}
	leaf := certsIn(t, certFile)[0]
	_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err == nil
}

// TestRotateCA walks a rotation of the cluster CA: what a client that has
// only the old CA (an old kubeconfig) and one that has only the new CA
// can verify, and which client certificates the servers accept, at
// every stage; every stage applied twice changes nothing.
func TestRotateCA(t *testing.T) {
	dir := t.TempDir()
	p := testParams
	pk := ensure(t, dir, p)
	oldCA := certsIn(t, pk.Cert(CAName))[0]
	oldAdmin := t.TempDir() + "/admin.crt"
	data, _ := os.ReadFile(pk.Cert(AdminName))
	if err := os.WriteFile(oldAdmin, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if n := len(certsIn(t, pk.TrustBundle())); n != 1 {
		t.Fatalf("bundle before a rotation has %d CAs, want 1", n)
	}
	etcdServer, _ := os.ReadFile(pk.Cert(EtcdServerName))

	steps := []struct {
		stage            string
		bundle           int  // CAs in the bundle
		oldClientServer  bool // a client with only the old CA verifies the API server
		newClientServer  bool // a client with only the new CA does
		oldAdminAccepted bool // the old admin certificate is trusted by the bundle
	}{
		{CAStageAdd, 2, true, false, true},
		{CAStageReissue, 2, true, true, true},
		{CAStageDrop, 1, false, true, false},
	}
	var newCA *x509.Certificate
	for _, st := range steps {
		for range 2 { // idempotent
			p.CAStage = st.stage
			ensure(t, dir, p)
		}
		switch st.stage {
		case CAStageAdd:
			newCA = certsIn(t, pk.Cert(NextCAName))[0]
			if !certsIn(t, pk.Cert(CAName))[0].Equal(oldCA) {
				t.Fatal("add: the old CA must still sign")
			}
		case CAStageReissue:
			if !certsIn(t, pk.Cert(CAName))[0].Equal(newCA) {
				t.Fatal("reissue: the new CA must sign")
			}
			for _, leaf := range []string{APIServerName, AdminName, ControllerMgrName, SchedulerName, KubeProxyName, APIServerKubeletName} {
				if err := certsIn(t, pk.Cert(leaf))[0].CheckSignatureFrom(newCA); err != nil {
					t.Errorf("reissue: %s not signed by the new CA: %v", leaf, err)
				}
			}
		}
		if n := len(certsIn(t, pk.TrustBundle())); n != st.bundle {
			t.Errorf("%s: bundle has %d CAs, want %d", st.stage, n, st.bundle)
		}
		if got := verifies(t, pk.Cert(APIServerName), oldCA); got != st.oldClientServer {
			t.Errorf("%s: a client with the old CA verifies the API server: %v, want %v", st.stage, got, st.oldClientServer)
		}
		if got := verifies(t, pk.Cert(APIServerName), newCA); got != st.newClientServer {
			t.Errorf("%s: a client with the new CA verifies the API server: %v, want %v", st.stage, got, st.newClientServer)
		}
		if got := clientVerifies(t, oldAdmin, pk.TrustBundle()); got != st.oldAdminAccepted {
			t.Errorf("%s: the old admin certificate is accepted: %v, want %v", st.stage, got, st.oldAdminAccepted)
		}
		if !clientVerifies(t, pk.Cert(AdminName), pk.TrustBundle()) {
			t.Errorf("%s: the current admin certificate is not accepted", st.stage)
		}
	}
	if after, _ := os.ReadFile(pk.Cert(EtcdServerName)); string(after) != string(etcdServer) {
		t.Error("the etcd CA's leaves changed in a rotation of the cluster CA")
	}
}

// TestRotateCACrashDuringReissue: a reissue stopped after the old pair was
// kept aside but before the swap finished still ends with the new CA
// signing and a cross certificate from the old one.
func TestRotateCACrashDuringReissue(t *testing.T) {
	dir := t.TempDir()
	p := testParams
	pk := ensure(t, dir, p)
	oldCA := certsIn(t, pk.Cert(CAName))[0]
	p.CAStage = CAStageAdd
	ensure(t, dir, p)
	newCA := certsIn(t, pk.Cert(NextCAName))[0]
	// The crash: previous and cross written, the key swapped, not the cert.
	nextKey, _ := os.ReadFile(pk.Key(NextCAName))
	old, oldKey, _ := loadPair(dir, CAName)
	cross, err := crossSign(&CA{Cert: old, Key: oldKey}, newCA)
	if err != nil {
		t.Fatal(err)
	}
	for f, data := range map[string][]byte{pk.Cert(CrossCAName): CertPEM(cross), pk.Cert(PreviousCAName): CertPEM(old), pk.Key(CAName): nextKey} {
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p.CAStage = CAStageReissue
	ensure(t, dir, p)
	if !certsIn(t, pk.Cert(CAName))[0].Equal(newCA) || !certsIn(t, pk.Cert(PreviousCAName))[0].Equal(oldCA) {
		t.Fatal("after the crash the pair is not the new CA with the old one kept")
	}
	if !verifies(t, pk.Cert(APIServerName), oldCA) || !verifies(t, pk.Cert(APIServerName), newCA) {
		t.Error("the API server's certificate does not verify with both CAs")
	}
}
