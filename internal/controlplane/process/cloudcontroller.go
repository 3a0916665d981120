package process

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/lotse/lotse/internal/cloudapi/ccm/provider"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/fsutil"
	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/supervisor"
)

// CompCloudController is the cloud controller manager: upstream's
// k8s.io/cloud-provider controllers (node initialization, node lifecycle,
// LoadBalancer Services) built with the cluster's release, with Lotse's
// provider asking the manager's cloud API. Like the controller-manager it
// runs beside each API server and, highly available, leader-elected.
const CompCloudController = "cloud-controller-manager"

// cloudControllers are the controllers it runs: no routes (Lotse's
// networks route pods themselves).
const cloudControllers = "cloud-node-controller,cloud-node-lifecycle-controller,service-lb-controller"

// Files of the cloud API's access in cloudAPIDir of the control plane's
// directory: apart from the PKI, which backups carry.
const (
	cloudAPICAFile     = "cloud-api-ca.crt"
	cloudAPICertFile   = "cloud-api-client.crt"
	cloudAPIKeyFile    = "cloud-api-client.key"
	cloudAPIConfigFile = "cloud-config.json"
	cloudAPIDir        = "cloud-api"
)

func (b *Backend) cloudAPIPath(key, name string) string {
	return filepath.Join(b.Dir(key), cloudAPIDir, name)
}

// cloudAPIEnv carries the digest of the cloud API's access in a process's
// spec: new access (another URL, a new certificate) restarts it.
const cloudAPIEnv = "LOTSE_CLOUD_API_DIGEST"

func (b *Backend) cloudControllerSpecs(spec controlplane.Spec, l Layout, p pki.ClusterPKI) []supervisor.Spec {
	cc := spec.CloudController
	if cc == nil {
		return nil
	}
	kubeconfig := p.Kubeconfig(pki.CloudControllerName)
	digest := cloudAPIDigest(cc.API)
	specs := make([]supervisor.Spec, 0, len(l.CloudController))
	for i, port := range l.CloudController {
		args := []string{
			"--kubeconfig=" + kubeconfig,
			"--cloud-provider=" + provider.Name,
			"--cloud-config=" + b.cloudAPIPath(spec.Key, cloudAPIConfigFile),
			"--controllers=" + cloudControllers,
			"--cluster-name=" + spec.Name,
			// The secure port serves /healthz to the backend's probes and
			// nothing else: without delegated authentication and
			// authorization (no kubeconfigs for them), every other path is
			// refused, and the cluster's identity needs no rights for it.
			"--bind-address=127.0.0.1",
			fmt.Sprintf("--secure-port=%d", port),
			"--tls-cert-file=" + p.Cert(pki.CloudControllerServing),
			"--tls-private-key-file=" + p.Key(pki.CloudControllerServing),
			"--use-service-account-credentials=false",
			"--configure-cloud-routes=false",
			"--profiling=false",
			fmt.Sprintf("--leader-elect=%t", spec.HighAvailability),
		}
		specs = append(specs, supervisor.Spec{
			Name:    processName(spec.Key, CompCloudController, i),
			Path:    cc.Binary,
			Args:    args,
			Env:     []string{cloudAPIEnv + "=" + digest},
			LogFile: b.logFile(spec.Key, CompCloudController, i),
			Tier:    3,
		})
	}
	return withCredentials(p, specs)
}

func cloudAPIDigest(a controlplane.CloudAPIAccess) string {
	h := sha256.New()
	for _, part := range [][]byte{[]byte(a.URL), a.CA, a.Cert, a.Key} {
		fmt.Fprintf(h, "%d\x00", len(part))
		h.Write(part)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// writeCloudAPIAccess writes the cloud API's CA, the cluster's client
// certificate and key, and the provider's configuration naming them.
func (b *Backend) writeCloudAPIAccess(key string, a controlplane.CloudAPIAccess) error {
	if a.URL == "" || len(a.CA) == 0 || len(a.Cert) == 0 || len(a.Key) == 0 {
		return fmt.Errorf("the cloud API's access lacks its URL, CA or client certificate")
	}
	if err := os.MkdirAll(filepath.Join(b.Dir(key), cloudAPIDir), 0o700); err != nil {
		return err
	}
	config, err := json.Marshal(provider.Config{Server: a.URL, CAFile: b.cloudAPIPath(key, cloudAPICAFile),
		CertFile: b.cloudAPIPath(key, cloudAPICertFile), KeyFile: b.cloudAPIPath(key, cloudAPIKeyFile)})
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{cloudAPICAFile, a.CA}, {cloudAPICertFile, a.Cert}, {cloudAPIKeyFile, a.Key}, {cloudAPIConfigFile, config}} {
		if err := fsutil.WriteIfChanged(b.cloudAPIPath(key, f.name), f.data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (b *Backend) ensureCloudControllers(ctx context.Context, spec controlplane.Spec, l Layout, p pki.ClusterPKI) (bool, string, error) {
	if err := b.writeCloudAPIAccess(spec.Key, spec.CloudController.API); err != nil {
		return false, "", err
	}
	return b.ensureHealthzComponent(ctx, spec, l, p, CompCloudController, b.cloudControllerSpecs(spec, l, p), l.CloudController)
}

// stopCloudControllers stops cloud controller managers a spec without one
// does not want (the manager runs the cluster's cloud controllers itself).
func (b *Backend) stopCloudControllers(spec controlplane.Spec, l Layout) {
	for i := range l.CloudController {
		name := processName(spec.Key, CompCloudController, i)
		if _, ok := b.Supervisor.RunningHash(name); ok {
			b.Supervisor.Stop(name)
		}
	}
}
