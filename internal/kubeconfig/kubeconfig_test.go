package kubeconfig

import (
	"strings"
	"testing"
)

const base = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:6443
%CLUSTER%
users:
- name: u
  user:
%USER%
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`

func config(cluster, user string) []byte {
	return []byte(strings.NewReplacer("%CLUSTER%", cluster, "%USER%", user).Replace(base))
}

func TestParseUntrusted(t *testing.T) {
	for _, tc := range []struct {
		name, cluster, user string
		want                string // "" = accepted
	}{
		{"inline token", "    insecure-skip-tls-verify: true", "    token: abc", ""},
		{"inline CA data", "    certificate-authority-data: " + "bm90IGEgY2VydA==", "    token: abc", ""},
		{"exec plugin", "", "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n      args: [-c, id]", "exec plugins are not allowed"},
		{"token file", "", "    tokenFile: /etc/shadow", "tokenFile names a file"},
		{"client certificate file", "", "    client-certificate: /state/pki/admin.crt\n    client-key: /state/pki/admin.key", "name files"},
		{"CA file", "    certificate-authority: /etc/ssl/ca.pem", "    token: abc", "certificate-authority names a file"},
		{"auth provider", "", "    auth-provider:\n      name: oidc", "auth providers are not allowed"},
		{"impersonation", "", "    token: abc\n    as: admin", "impersonation is not allowed"},
		{"proxy", "    proxy-url: http://127.0.0.1:3128", "    token: abc", "proxy-url is not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseUntrusted(config(tc.cluster, tc.user))
			if tc.want == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
