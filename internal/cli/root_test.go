package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestUnknownOrMissingSubcommandFails(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{[]string{"bogus"}, `unknown command "bogus" for "lotse"`},
		{[]string{"cluster", "bogus"}, `unknown command "bogus" for "lotse cluster"`},
		{[]string{"fleet", "bogus"}, `unknown command "bogus" for "lotse fleet"`},
		{[]string{"fleet"}, "lotse fleet needs a subcommand: agent, create, delete, join, kubeconfig, list, register, status, unjoin"},
		{[]string{"fleet", "delete"}, "expected one name; usage: lotse fleet delete NAME"},
		{[]string{"fleet", "register", "f", "m"}, "give --kubeconfig-file and --agent-image to deploy the agent, or --bootstrap-kubeconfig FILE"},
		{[]string{"fleet", "register", "f", "m", "--agent-image", "img"}, "--kubeconfig-file and --agent-image go together"},
		{[]string{"fleet", "register", "f", "m", "--bootstrap-kubeconfig", "b", "--fleet-endpoint", "http://10.0.0.1:6443"}, "--fleet-endpoint \"http://10.0.0.1:6443\": give https://HOST:PORT"},
		{[]string{"fleet", "register", "f", "m", "--bootstrap-kubeconfig", "b", "--fleet-endpoint", "10.0.0.1:6443"}, "--fleet-endpoint \"10.0.0.1:6443\": give https://HOST:PORT"},
		{[]string{"fleet", "agent", "--member", "m", "--fleet-kubeconfig", "k", "--identity-secret", "nons"}, "--identity-secret \"nons\": give NAMESPACE/NAME"},
		{[]string{"completion", "bogus"}, `unknown command "bogus" for "lotse completion"`},
		{[]string{"seed", "add", "s", "--management-cluster", "--api-server-service", "ClusterIP"}, `--api-server-service "ClusterIP": want LoadBalancer`},
		{[]string{"manager", "--image-registry", "registry.example.net"}, "--image-registry: repository \"registry.example.net\": give the registry host and a path under it"},
		{[]string{"up", "--image-registry", "registry.example.net"}, "--image-registry: repository \"registry.example.net\": give the registry host and a path under it"},
		{[]string{"up", "--image-registry-plain-http"}, "need --image-registry"},
		{[]string{"cluster", "rotate", "x", "y", "z", "w"}, ""}, // a leaf command: its own argument check
		{[]string{}, ""},
		{[]string{"cluster", "--help"}, ""},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			root := newRootCommand()
			root.SetArgs(tc.args)
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetErr(&out)
			err := root.Execute()
			switch {
			case tc.wantErr == "" && len(tc.args) > 2:
				if err == nil {
					t.Error("a leaf command with bad arguments succeeded")
				}
			case tc.wantErr == "":
				if err != nil {
					t.Errorf("error %v", err)
				}
			case err == nil || !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}
