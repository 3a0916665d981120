package process

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/pki"
)

func TestLayoutTunnel(t *testing.T) {
	tests := []struct {
		name    string
		spec    controlplane.Spec
		servers int // 0: no tunnel
	}{
		{"single", controlplane.Spec{Key: "clusters/default/a", Name: "a"}, 1},
		{"HA: a server per API server", controlplane.Spec{Key: "clusters/default/b", Name: "b", HighAvailability: true}, 2},
		{"management plane: none", controlplane.Spec{Key: "management", Name: "m", WithoutTunnel: true}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &Backend{StateDir: t.TempDir()}
			l, err := b.ensureLayout(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			if tt.servers == 0 {
				if l.Tunnel != nil {
					t.Fatalf("tunnel ports %+v, want none", l.Tunnel)
				}
				return
			}
			tp := l.Tunnel
			if tp == nil || len(tp.Agent) != tt.servers || len(tp.Admin) != tt.servers || len(tp.Health) != tt.servers || tp.Node == 0 {
				t.Fatalf("tunnel ports %+v, want %d servers", tp, tt.servers)
			}
			for _, p := range append(append(append([]int{tp.Node}, tp.Agent...), tp.Admin...), tp.Health...) {
				if p < 1024 || p > 49151 {
					t.Errorf("port %d outside what konnectivity accepts (1024-49151)", p)
				}
			}
			again, err := b.ensureLayout(tt.spec)
			if err != nil || again.Tunnel.Node != tp.Node || again.Tunnel.Agent[0] != tp.Agent[0] {
				t.Errorf("second ensureLayout changed the tunnel ports: %+v -> %+v (%v)", tp, again.Tunnel, err)
			}
		})
	}
}

// A layout written before the tunnel existed gets tunnel ports, and keeps
// everything else.
func TestLayoutTunnelAddedToOldLayout(t *testing.T) {
	b := &Backend{StateDir: t.TempDir()}
	spec := controlplane.Spec{Key: "clusters/default/old", Name: "old"}
	old := Layout{EtcdClient: []int{2379}, EtcdPeer: []int{2380}, APIServer: []int{6443}, ControllerManager: []int{10257}, Scheduler: []int{10259}, NodesCIDR: "10.250.9.0/24"}
	data, _ := json.Marshal(old)
	if err := os.MkdirAll(b.Dir(spec.Key), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b.layoutPath(spec.Key), data, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := b.ensureLayout(spec)
	if err != nil {
		t.Fatal(err)
	}
	if l.Tunnel == nil || len(l.Tunnel.Agent) != 1 {
		t.Fatalf("tunnel %+v, want one server", l.Tunnel)
	}
	if l.APIServer[0] != 6443 || l.NodesCIDR != old.NodesCIDR {
		t.Errorf("the old ports changed: %+v", l)
	}
	if saved, err := b.LoadLayout(spec.Key); err != nil || saved.Tunnel == nil {
		t.Errorf("tunnel ports not saved: %+v %v", saved, err)
	}
}

func TestTunnelProcesses(t *testing.T) {
	b := &Backend{StateDir: t.TempDir()}
	spec := controlplane.Spec{Key: "clusters/default/c1", Name: "c1", HighAvailability: true, ServiceCIDR: "10.96.0.0/16"}
	l, err := b.ensureLayout(spec)
	if err != nil {
		t.Fatal(err)
	}
	p := pki.ClusterPKI{Dir: "/pki"}
	servers := b.tunnelServerSpecs(spec, l, p)
	apis := b.apiServerSpecs(spec, l, p)
	if len(servers) != 2 || len(apis) != 2 {
		t.Fatalf("%d servers for %d API servers", len(servers), len(apis))
	}
	for i := range servers {
		args := strings.Join(servers[i].Args, " ")
		sock := b.tunnelSocket(spec.Key, i)
		for _, want := range []string{"--uds-name=" + sock, "--server-count=2", "--agent-bind-address=127.0.0.1", "--cluster-ca-cert=/pki/konnectivity-ca.crt", "--mode=grpc"} {
			if !strings.Contains(args, want) {
				t.Errorf("server %d args lack %q: %s", i, want, args)
			}
		}
		if len(sock) > 107 {
			t.Errorf("socket path %s is too long for a unix socket", sock)
		}
		apiArgs := strings.Join(apis[i].Args, " ")
		if !strings.Contains(apiArgs, "--egress-selector-config-file="+b.egressSelectorFile(spec.Key, i)) {
			t.Errorf("API server %d does not use its egress selector: %s", i, apiArgs)
		}
	}
	if err := b.writeEgressSelectors(spec, l); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(b.egressSelectorFile(spec.Key, 1))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), "name: cluster") || !strings.Contains(string(cfg), "udsName: "+b.tunnelSocket(spec.Key, 1)) {
		t.Errorf("egress selector of API server 1:\n%s", cfg)
	}
	if b.tunnelSocket(spec.Key, 0) == b.tunnelSocket("clusters/default/c2", 0) {
		t.Error("two clusters share a tunnel socket")
	}
	// Without a tunnel the API servers get no egress selector.
	l.Tunnel = nil
	for _, s := range b.apiServerSpecs(spec, l, p) {
		if strings.Contains(strings.Join(s.Args, " "), "egress-selector") {
			t.Errorf("API server without tunnel has an egress selector: %v", s.Args)
		}
	}
}

func TestRemoveTunnelSockets(t *testing.T) {
	b := &Backend{StateDir: t.TempDir()}
	if err := os.MkdirAll(b.runDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"clusters/default/a", "clusters/default/b"} {
		for i := 0; i < 2; i++ {
			if err := os.WriteFile(b.tunnelSocket(key, i), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	b.removeTunnelSockets("clusters/default/a")
	left, _ := filepath.Glob(filepath.Join(b.runDir(), "*"))
	if len(left) != 2 || !strings.Contains(left[0], filepath.Base(strings.TrimSuffix(b.tunnelSocket("clusters/default/b", 0), "0.sock"))) {
		t.Errorf("left after removing a's sockets: %v", left)
	}
}
