package local

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/lotse/lotse/internal/machine"
)

// containerdConfig keeps everything of one machine's containerd under its own
// directories: no two machines share a socket, root, state or runc root.
// restrict_oom_score_adj: this host lacks CAP_SYS_RESOURCE, and runc fails
// with "can't get final child's PID from pipe" when asked to lower
// oom_score_adj.
func containerdConfig(m *Machine) string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  restrict_oom_score_adj = true
  # Pod network namespaces under this machine's state directory, not the
  # host-wide /run/netns: deleting the machine finds and removes them.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %[7]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[8]q
`, m.path("containerd", "root"), m.runPath("state"), m.Socket(), m.runPath("containerd.sock.ttrpc"),
		m.path("containerd", "opt"), m.PauseImage, m.runPath("runc"), m.path("cni", "net.d"))
}

// kubeletConfig is the KubeletConfiguration of a machine. failCgroupV1:
// this host has cgroup v1, which kubelet >= 1.35 refuses by default.
func kubeletConfig(m *Machine) string {
	taints := ""
	if len(m.Taints) > 0 {
		var b strings.Builder
		b.WriteString("registerWithTaints:\n")
		for _, t := range m.Taints {
			fmt.Fprintf(&b, "- key: %q\n  value: %q\n  effect: %q\n", t.Key, t.Value, t.Effect)
		}
		taints = b.String()
	}
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %[1]q
containerRuntimeEndpoint: unix://%[2]s
providerID: %[3]q
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[4]q}
authorization: {mode: Webhook}
serverTLSBootstrap: true
rotateCertificates: true
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
clusterDomain: cluster.local
clusterDNS: [%[5]q]
resolvConf: %[6]q
podLogsDir: %[7]q
volumePluginDir: %[8]q
failSwapOn: false
hairpinMode: hairpin-veth
evictionHard: {memory.available: "100Mi", nodefs.available: "2%%", imagefs.available: "2%%"}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
%[9]s%[10]s`, m.cgroupRoot(), m.Socket(), m.ProviderID(), m.PKI.TrustBundle(), m.ClusterDNS,
		m.path("resolv.conf"), m.path("pod-logs"), m.path("kubelet-plugins"), taints, systemReserved(m.Class))
}

// evictionMemory is the kubelet's memory.available eviction threshold
// (evictionHard above), which allocatable leaves out too.
const evictionMemory = 100 << 20

// systemReserved makes a machine of a sized class report its class as
// allocatable: the kubelet sees the host's CPUs and memory as capacity,
// and everything beyond the class is reserved.
func systemReserved(c machine.Class) string {
	if c.CPU == 0 && c.Memory == 0 {
		return ""
	}
	hostCPU, hostMem := machine.Host()
	alloc := c.Allocatable(hostCPU, hostMem)
	cpu := hostCPU - alloc.Cpu().MilliValue()
	mem := hostMem - alloc.Memory().Value() - evictionMemory
	if mem < 0 {
		mem = 0
	}
	return fmt.Sprintf("systemReserved: {cpu: \"%dm\", memory: \"%d\"}\n", cpu, mem)
}

// kubeProxyConfig: conntrack sysctls are read-only inside a network
// namespace, so kube-proxy must not try to set them.
func kubeProxyConfig(m *Machine) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %[1]q}
mode: iptables
clusterCIDR: %[2]q
hostnameOverride: %[3]q
metricsBindAddress: 127.0.0.1:10249
# On the node address too: balancers of LoadBalancer Services check it.
healthzBindAddress: 0.0.0.0:10256
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
`, m.path("kube-proxy.kubeconfig"), m.ClusterCIDR, m.Name)
}

// cniConfig wires pods to a bridge with addresses from the node's pod CIDR.
// No masquerading here: pods talk to pods on other nodes with their own
// addresses (Kubernetes' network model); traffic leaving the cluster's pod
// range is masqueraded by the machine's own rule (see ensureMasquerade).
func cniConfig(m *Machine, podCIDR string) string {
	conf := map[string]any{
		"cniVersion": "0.4.0",
		"name":       "lotse",
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"dataDir": m.path("cni", "networks"),
					"ranges":  [][]map[string]string{{{"subnet": podCIDR}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	data, _ := json.MarshalIndent(conf, "", "  ")
	return string(data)
}
