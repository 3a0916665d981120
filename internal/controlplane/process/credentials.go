package process

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/supervisor"
)

// credentialsEnv names the digest of the credential files a process reads
// (certificates, keys, kubeconfigs, the encryption configuration). It is
// part of the process spec, so when a rotation changes a file the
// component's instances are replaced one at a time by the ordinary
// rollout, in upgrade order and with the API servers' hand-over, as for a
// new binary.
const credentialsEnv = "LOTSE_CREDENTIALS"

// withCredentials adds the digest of the PKI files named in each spec's
// flags to its environment.
func withCredentials(p pki.ClusterPKI, specs []supervisor.Spec) []supervisor.Spec {
	for i := range specs {
		if d := credentialsDigest(p.Dir, specs[i].Args); d != "" {
			specs[i].Env = append(specs[i].Env, credentialsEnv+"="+d)
		}
	}
	return specs
}

// credentialsDigest hashes the names and contents of the files in dir
// that args refer to (--flag=PATH); "" if none.
func credentialsDigest(dir string, args []string) string {
	h := sha256.New()
	n := 0
	prefix := filepath.Clean(dir) + string(filepath.Separator)
	for _, a := range args {
		_, value, ok := strings.Cut(a, "=")
		if !ok || !strings.HasPrefix(value, prefix) {
			continue
		}
		data, err := os.ReadFile(value)
		if err != nil {
			continue // not written yet: the next reconcile sees it
		}
		fmt.Fprintf(h, "%s\x00%d\x00", value, len(data))
		h.Write(data)
		n++
	}
	if n == 0 {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
