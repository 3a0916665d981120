package cli

import (
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

func TestWithFleetEndpoint(t *testing.T) {
	kubeconfig := func(server, serverName string) []byte {
		cfg := clientcmdapi.NewConfig()
		cfg.Clusters["fleet"] = &clientcmdapi.Cluster{Server: server, TLSServerName: serverName, CertificateAuthorityData: []byte("ca")}
		cfg.AuthInfos["agent"] = &clientcmdapi.AuthInfo{Token: "abcdef.0123456789abcdef"}
		cfg.Contexts["fleet"] = &clientcmdapi.Context{Cluster: "fleet", AuthInfo: "agent"}
		cfg.CurrentContext = "fleet"
		data, err := clientcmd.Write(*cfg)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	tests := []struct {
		name, server, serverName, endpoint string
		wantServer, wantServerName         string
	}{
		{"an address for the member, checked against the fleet's own", "https://127.0.0.1:40123", "", "https://10.20.0.1:41000", "https://10.20.0.1:41000", "127.0.0.1"},
		{"a host name", "https://fleet.internal:6443", "", "https://fleet.example.net:443/", "https://fleet.example.net:443", "fleet.internal"},
		{"a server name given before is kept", "https://127.0.0.1:40123", "api.fleet", "https://10.20.0.1:41000", "https://10.20.0.1:41000", "api.fleet"},
		{"IPv6, in brackets", "https://[::1]:40123", "", "https://[fd00::1]:41000", "https://[fd00::1]:41000", "::1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := withFleetEndpoint(kubeconfig(tt.server, tt.serverName), tt.endpoint)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := clientcmd.Load(out)
			if err != nil {
				t.Fatal(err)
			}
			c := cfg.Clusters["fleet"]
			if c.Server != tt.wantServer || c.TLSServerName != tt.wantServerName || string(c.CertificateAuthorityData) != "ca" {
				t.Errorf("server %q, tls-server-name %q, CA %q; want %q, %q and the CA kept", c.Server, c.TLSServerName, c.CertificateAuthorityData, tt.wantServer, tt.wantServerName)
			}
			if cfg.AuthInfos["agent"].Token != "abcdef.0123456789abcdef" {
				t.Errorf("the token was lost")
			}
		})
	}
	for _, bad := range []string{"http://10.0.0.1:6443", "10.0.0.1:6443", "https://", "https://10.0.0.1:6443/api", "https://10.0.0.1?x=1",
		"https://fd00::1", "https://user:pw@10.0.0.1:6443", "https://10.0.0.1:6443#x", "https://%zz"} {
		if _, err := withFleetEndpoint(kubeconfig("https://127.0.0.1:1", ""), bad); err == nil {
			t.Errorf("--fleet-endpoint %q was taken", bad)
		}
	}
}
