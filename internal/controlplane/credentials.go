package controlplane

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lotse/lotse/internal/pki"
)

// TunnelCredentialsOf returns what a cluster's konnectivity agents need
// from its PKI: the CA that signed the tunnel servers' certificate and
// the agents' client certificate and key. Every backend keeps the PKI
// the same way, so they share this.
func TunnelCredentialsOf(p pki.ClusterPKI) (TunnelCredentials, error) {
	var c TunnelCredentials
	var err error
	if c.CA, err = os.ReadFile(p.Cert(pki.KonnectivityCAName)); err != nil {
		return c, err
	}
	if c.Cert, err = os.ReadFile(p.Cert(pki.KonnectivityAgentName)); err != nil {
		return c, err
	}
	c.Key, err = os.ReadFile(p.Key(pki.KonnectivityAgentName))
	return c, err
}

// AddonServingOf issues (once) an addon's serving certificate from the
// cluster's addons CA in p.
func AddonServingOf(p pki.ClusterPKI, name string, dnsNames []string) (ServingCredentials, error) {
	if len(dnsNames) == 0 {
		return ServingCredentials{}, fmt.Errorf("addon %s: no DNS names to serve", name)
	}
	ca, cert, key, err := p.EnsureAddonServing(name, dnsNames)
	return ServingCredentials{CA: ca, Cert: cert, Key: key}, err
}

// BackupCredentialsOf returns every file of a cluster's PKI by name: what
// a backup keeps beside the snapshot.
func BackupCredentialsOf(p pki.ClusterPKI) (map[string][]byte, error) {
	entries, err := os.ReadDir(p.Dir)
	if err != nil {
		return nil, fmt.Errorf("read the control plane's credentials: %w", err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(p.Dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out[e.Name()] = data
	}
	return out, nil
}
