package pki

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

// rawKubeconfig is the subset of a kubeconfig the test checks in its raw
// (base64) form.
type rawKubeconfig struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Clusters   []struct {
		Name    string `json:"name"`
		Cluster struct {
			Server                   string `json:"server"`
			CertificateAuthorityData string `json:"certificate-authority-data"`
		} `json:"cluster"`
	} `json:"clusters"`
	Users []struct {
		Name string `json:"name"`
		User struct {
			ClientCertificateData string `json:"client-certificate-data"`
			ClientKeyData         string `json:"client-key-data"`
		} `json:"user"`
	} `json:"users"`
	Contexts []struct {
		Name    string `json:"name"`
		Context struct {
			Cluster string `json:"cluster"`
			User    string `json:"user"`
		} `json:"context"`
	} `json:"contexts"`
	CurrentContext string `json:"current-context"`
}

func TestKubeconfigFor(t *testing.T) {
	pk := ensure(t, t.TempDir(), testParams)
	ca, _ := os.ReadFile(pk.Cert(CAName))
	tests := []struct {
		client, server string
	}{
		{AdminName, "https://127.0.0.1:6443"},
		{ControllerMgrName, "https://[::1]:16443"},
		{SchedulerName, "https://api.demo.example:443"},
	}
	for _, tt := range tests {
		t.Run(tt.client, func(t *testing.T) {
			data, err := pk.KubeconfigFor("demo", tt.client, tt.server)
			if err != nil {
				t.Fatalf("KubeconfigFor: %v", err)
			}
			cert, _ := os.ReadFile(pk.Cert(tt.client))
			key, _ := os.ReadFile(pk.Key(tt.client))

			var raw rawKubeconfig
			if err := yaml.UnmarshalStrict(data, &raw); err != nil {
				t.Fatalf("kubeconfig is not valid YAML: %v\n%s", err, data)
			}
			if raw.APIVersion != "v1" || raw.Kind != "Config" {
				t.Errorf("apiVersion/kind = %s/%s", raw.APIVersion, raw.Kind)
			}
			if len(raw.Clusters) != 1 || len(raw.Users) != 1 || len(raw.Contexts) != 1 {
				t.Fatalf("want one cluster, user and context:\n%s", data)
			}
			if got := raw.Clusters[0].Cluster.Server; got != tt.server {
				t.Errorf("server = %q, want %q", got, tt.server)
			}
			b64 := base64.StdEncoding.EncodeToString
			if raw.Clusters[0].Cluster.CertificateAuthorityData != b64(ca) {
				t.Error("certificate-authority-data is not the base64 of ca.crt")
			}
			if raw.Users[0].User.ClientCertificateData != b64(cert) {
				t.Errorf("client-certificate-data is not the base64 of %s.crt", tt.client)
			}
			if raw.Users[0].User.ClientKeyData != b64(key) {
				t.Errorf("client-key-data is not the base64 of %s.key", tt.client)
			}

			// client-go reads it the same way.
			cfg, err := clientcmd.Load(data)
			if err != nil {
				t.Fatalf("clientcmd.Load: %v", err)
			}
			ctx, ok := cfg.Contexts[cfg.CurrentContext]
			if !ok {
				t.Fatalf("current context %q does not exist", cfg.CurrentContext)
			}
			if ctx.Cluster != "demo" || ctx.AuthInfo != tt.client {
				t.Errorf("context = %+v, want cluster demo and user %s", ctx, tt.client)
			}
			cl := cfg.Clusters[ctx.Cluster]
			if cl == nil || cl.Server != tt.server || !bytes.Equal(cl.CertificateAuthorityData, ca) {
				t.Errorf("cluster = %+v", cl)
			}
			ai := cfg.AuthInfos[ctx.AuthInfo]
			if ai == nil || !bytes.Equal(ai.ClientCertificateData, cert) || !bytes.Equal(ai.ClientKeyData, key) {
				t.Errorf("user %s does not carry its certificate and key", tt.client)
			}
			if err := clientcmd.Validate(*cfg); err != nil {
				t.Errorf("clientcmd.Validate: %v", err)
			}
		})
	}
}

func TestKubeconfigForMissingCert(t *testing.T) {
	pk := ensure(t, t.TempDir(), testParams)
	if _, err := pk.KubeconfigFor("demo", "no-such-user", "https://127.0.0.1:6443"); err == nil {
		t.Error("KubeconfigFor a certificate that does not exist succeeded")
	}
	if _, err := (ClusterPKI{Dir: t.TempDir()}).KubeconfigFor("demo", AdminName, "https://127.0.0.1:6443"); err == nil {
		t.Error("KubeconfigFor in an empty directory succeeded")
	}
}

func TestWriteKubeconfig(t *testing.T) {
	pk := ensure(t, t.TempDir(), testParams)
	if err := pk.WriteKubeconfig("demo", AdminName, "https://127.0.0.1:6443"); err != nil {
		t.Fatalf("WriteKubeconfig: %v", err)
	}
	fi, err := os.Stat(pk.Kubeconfig(AdminName))
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("kubeconfig mode %o, want 600", m)
	}
	want, _ := pk.KubeconfigFor("demo", AdminName, "https://127.0.0.1:6443")
	got, _ := os.ReadFile(pk.Kubeconfig(AdminName))
	if !bytes.Equal(got, want) {
		t.Error("written kubeconfig differs from KubeconfigFor")
	}
	// A changed server is written.
	if err := pk.WriteKubeconfig("demo", AdminName, "https://127.0.0.1:7443"); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(pk.Kubeconfig(AdminName))
	if !strings.Contains(string(got), "https://127.0.0.1:7443") {
		t.Error("kubeconfig not updated for a new server")
	}
}

// TestKubeconfigMutualTLS connects with the admin kubeconfig to a server
// using the apiserver certificate and requiring client certificates of the
// cluster CA: the PKI must work end to end.
func TestKubeconfigMutualTLS(t *testing.T) {
	pk := ensure(t, t.TempDir(), testParams)
	serverCert, err := tls.LoadX509KeyPair(pk.Cert(APIServerName), pk.Key(APIServerName))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(pk.Cert(CAName))
	clientCAs := x509.NewCertPool()
	clientCAs.AppendCertsFromPEM(caPEM)

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no client certificate", http.StatusUnauthorized)
			return
		}
		c := r.TLS.PeerCertificates[0]
		io.WriteString(w, c.Subject.CommonName+"/"+strings.Join(c.Subject.Organization, ","))
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake below is expected
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: clientCAs, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	defer srv.Close()

	get := func(name string) (string, error) {
		data, err := pk.KubeconfigFor("demo", name, srv.URL)
		if err != nil {
			return "", err
		}
		cfg, err := clientcmd.RESTConfigFromKubeConfig(data)
		if err != nil {
			return "", err
		}
		client, err := rest.HTTPClientFor(cfg)
		if err != nil {
			return "", err
		}
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL+"/", nil)
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return string(body), err
	}
	if got, err := get(AdminName); err != nil || got != "lotse-admin/system:masters" {
		t.Errorf("admin request = %q, %v; want lotse-admin/system:masters", got, err)
	}
	// A client certificate of the etcd CA is refused.
	data, err := pk.KubeconfigFor("demo", EtcdAdminName, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	client, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := client.Get(srv.URL + "/"); err == nil {
		resp.Body.Close()
		t.Error("server accepted a client certificate of the etcd CA")
	}
}
