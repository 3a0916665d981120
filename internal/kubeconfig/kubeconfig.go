// Package kubeconfig reads kubeconfigs that someone other than Lotse may
// have written: those in Secrets that tenants can write (a fleet member's
// kubeconfig, a cluster's kubeconfig Secret). client-go would follow such a
// file wherever it points: run an exec plugin or an auth provider as the
// manager, send a host file as a bearer token, present the host's client
// certificates. ParseUntrusted accepts only what is inline.
package kubeconfig

import (
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// ParseUntrusted builds a client configuration from a kubeconfig's current
// context, refusing anything that reads files, runs programs or routes
// through a proxy: credentials and CAs must be inline (*-data, token,
// username/password).
func ParseUntrusted(data []byte) (*rest.Config, error) {
	cfg, err := clientcmd.Load(data)
	if err != nil {
		return nil, err
	}
	if err := checkInline(cfg); err != nil {
		return nil, err
	}
	return clientcmd.NewDefaultClientConfig(*cfg, &clientcmd.ConfigOverrides{}).ClientConfig()
}

func checkInline(cfg *clientcmdapi.Config) error {
	for name, c := range cfg.Clusters {
		switch {
		case c.CertificateAuthority != "":
			return fmt.Errorf("kubeconfig cluster %q: certificate-authority names a file; put the CA inline (certificate-authority-data)", name)
		case c.ProxyURL != "":
			return fmt.Errorf("kubeconfig cluster %q: proxy-url is not allowed here", name)
		}
	}
	for name, a := range cfg.AuthInfos {
		switch {
		case a.Exec != nil:
			return fmt.Errorf("kubeconfig user %q: exec plugins are not allowed here; use a token or client certificate inline", name)
		case a.AuthProvider != nil:
			return fmt.Errorf("kubeconfig user %q: auth providers are not allowed here; use a token or client certificate inline", name)
		case a.TokenFile != "":
			return fmt.Errorf("kubeconfig user %q: tokenFile names a file; put the token inline (token)", name)
		case a.ClientCertificate != "" || a.ClientKey != "":
			return fmt.Errorf("kubeconfig user %q: client-certificate and client-key name files; put them inline (client-certificate-data, client-key-data)", name)
		case a.Impersonate != "" || len(a.ImpersonateGroups) > 0 || a.ImpersonateUID != "" || len(a.ImpersonateUserExtra) > 0:
			return fmt.Errorf("kubeconfig user %q: impersonation is not allowed here", name)
		}
	}
	return nil
}
