package addons

import (
	"context"
	"encoding/base64"
	"fmt"
	"text/template"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Tunnel configures the konnectivity agents: every node runs one (host
// network), which dials out to the control plane's tunnel servers and
// carries the API servers' traffic into the cluster's network.
type Tunnel struct {
	// Image is the agent image (loaded on every node).
	Image string
	// Host and Port are where agents reach the tunnel servers.
	Host string
	Port int
	// Servers is how many servers each agent must hold a connection to.
	Servers int
	// CA verifies the servers; Cert and Key are the agents' client
	// certificate (PEM).
	CA, Cert, Key []byte
}

// TunnelAgentName names the agent's DaemonSet, Secret and ServiceAccount.
const TunnelAgentName = "konnectivity-agent"

// Ports the agent listens on in each node's network namespace, loopback only.
const (
	tunnelAgentAdminPort  = 8133
	tunnelAgentHealthPort = 8134
)

func renderTunnel(t *Tunnel) (string, error) {
	if t == nil {
		return "", nil
	}
	if t.Image == "" || t.Host == "" || t.Port == 0 || t.Servers < 1 || len(t.CA) == 0 || len(t.Cert) == 0 || len(t.Key) == 0 {
		return "", fmt.Errorf("tunnel addon: image, host, port, server count and credentials are all required")
	}
	b64 := base64.StdEncoding.EncodeToString
	return execute(tunnelTemplate, map[string]any{
		"Name": TunnelAgentName, "Image": t.Image, "Host": t.Host, "Port": t.Port, "Servers": t.Servers,
		"CA": b64(t.CA), "Cert": b64(t.Cert), "Key": b64(t.Key),
		"AdminPort": tunnelAgentAdminPort, "HealthPort": tunnelAgentHealthPort,
	})
}

// tunnelHealth reports whether every scheduled agent is connected (ready).
func tunnelHealth(ctx context.Context, cs kubernetes.Interface) (bool, string, error) {
	ds, err := cs.AppsV1().DaemonSets("kube-system").Get(ctx, TunnelAgentName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, "konnectivity-agent daemonset missing", nil
	}
	if err != nil {
		return false, "", err
	}
	s := ds.Status
	if s.ObservedGeneration < ds.Generation || s.DesiredNumberScheduled == 0 || s.NumberReady < s.DesiredNumberScheduled || s.UpdatedNumberScheduled < s.DesiredNumberScheduled {
		return false, fmt.Sprintf("konnectivity-agent: %d/%d agents connected to the tunnel", s.NumberReady, s.DesiredNumberScheduled), nil
	}
	return true, fmt.Sprintf("konnectivity-agent: %d/%d agents connected", s.NumberReady, s.DesiredNumberScheduled), nil
}

var tunnelTemplate = template.Must(template.New("konnectivity").Parse(`
apiVersion: v1
kind: Secret
metadata: {name: {{ .Name }}, namespace: kube-system, labels: {app.kubernetes.io/managed-by: lotse}}
type: Opaque
data:
  ca.crt: {{ .CA }}
  tls.crt: {{ .Cert }}
  tls.key: {{ .Key }}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: {{ .Name }}, namespace: kube-system, labels: {app.kubernetes.io/managed-by: lotse}}
automountServiceAccountToken: false
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: {{ .Name }}, namespace: kube-system, labels: {k8s-app: {{ .Name }}, app.kubernetes.io/managed-by: lotse}}
spec:
  selector: {matchLabels: {k8s-app: {{ .Name }}}}
  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1}}
  template:
    metadata: {labels: {k8s-app: {{ .Name }}}}
    spec:
      serviceAccountName: {{ .Name }}
      automountServiceAccountToken: false
      securityContext: {fsGroup: 65534}
      priorityClassName: system-node-critical
      # On the node's own network: the API server's kubelet connections
      # (logs, exec, port-forward) and pod traffic leave from the node.
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      tolerations:
      - {operator: Exists}
      containers:
      - name: agent
        image: {{ .Image }}
        imagePullPolicy: Never
        args:
        - --proxy-server-host={{ .Host }}
        - --proxy-server-port={{ .Port }}
        - --ca-cert=/etc/konnectivity/ca.crt
        - --agent-cert=/etc/konnectivity/tls.crt
        - --agent-key=/etc/konnectivity/tls.key
        - --agent-id=$(NODE_NAME)
        # The server sends a node's kubelet traffic to that node's agent.
        - --agent-identifiers=ipv4=$(HOST_IP)
        - --sync-forever=true
        - --sync-interval=1s
        - --sync-interval-cap=15s
        - --probe-interval=1s
        - --keepalive-time=30s
        - --admin-bind-address=127.0.0.1
        - --admin-server-port={{ .AdminPort }}
        - --health-server-host=127.0.0.1
        - --health-server-port={{ .HealthPort }}
        env:
        - name: NODE_NAME
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
        - name: HOST_IP
          valueFrom: {fieldRef: {fieldPath: status.hostIP}}
        resources:
          requests: {cpu: 10m, memory: 20Mi}
          limits: {memory: 100Mi}
        livenessProbe:
          httpGet: {host: 127.0.0.1, path: /healthz, port: {{ .HealthPort }}}
          periodSeconds: 10
          failureThreshold: 3
        readinessProbe:
          httpGet: {host: 127.0.0.1, path: /readyz, port: {{ .HealthPort }}}
          periodSeconds: 1
        securityContext:
          runAsUser: 65534
          runAsGroup: 65534
          runAsNonRoot: true
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
        volumeMounts:
        - {name: credentials, mountPath: /etc/konnectivity, readOnly: true}
      volumes:
      - name: credentials
        secret: {secretName: {{ .Name }}, defaultMode: 0440}
`))
