package seed

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/gobuild"
	"github.com/lotse/lotse/internal/pki"
)

// Snapshot saves a snapshot of the control plane's etcd to path. etcd is
// reachable only inside the seed, so the snapshot goes through a port
// forward (through the seed's API, as `kubectl port-forward` does) to a
// ready member, with the release's etcdctl and the etcd admin certificate.
func (b *Backend) Snapshot(ctx context.Context, spec controlplane.Spec, path string) error {
	l, err := b.layout(ctx, spec.Key, spec.Seed)
	if err != nil {
		return err
	}
	sc, err := b.client(ctx, l.Seed)
	if err != nil {
		return err
	}
	pod, err := sc.readyPod(ctx, l.Namespace, etcdName)
	if err != nil {
		return err
	}
	port, stop, err := sc.forward(l.Namespace, pod, etcdClientPort)
	if err != nil {
		return err
	}
	defer stop()
	p := b.PKI(spec.Key)
	tmp := path + ".part"
	cmd := gobuild.Command(ctx, spec.Binaries.Path("etcdctl"), "snapshot", "save", tmp,
		"--endpoints=https://127.0.0.1:"+strconv.Itoa(port), "--cacert="+p.Cert(pki.EtcdCAName),
		"--cert="+p.Cert(pki.EtcdAdminName), "--key="+p.Key(pki.EtcdAdminName))
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("etcdctl snapshot save (member %s on seed %s): %v: %s", pod, l.Seed, err, out)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// readyPod names a ready pod of a component.
func (sc *seedClient) readyPod(ctx context.Context, namespace, component string) (string, error) {
	pods, err := sc.kube.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelComponent + "=" + component})
	if err != nil {
		return "", err
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return p.Name, nil
			}
		}
	}
	return "", fmt.Errorf("no ready %s pod in %s", component, namespace)
}

// forward opens a port forward to a pod's port on a free loopback port.
func (sc *seedClient) forward(namespace, pod string, port int) (int, func(), error) {
	transport, upgrader, err := spdy.RoundTripperFor(sc.cfg)
	if err != nil {
		return 0, nil, err
	}
	url := sc.kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("portforward").URL()
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, url)
	stopCh, readyCh := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(port)}, stopCh, readyCh, io.Discard, io.Discard)
	if err != nil {
		return 0, nil, err
	}
	errCh := make(chan error, 1)
	go func() { errCh <- fw.ForwardPorts() }()
	stop := func() { close(stopCh) }
	select {
	case <-readyCh:
	case err := <-errCh:
		return 0, nil, fmt.Errorf("port forward to %s/%s: %v", namespace, pod, err)
	case <-time.After(30 * time.Second):
		stop()
		return 0, nil, fmt.Errorf("port forward to %s/%s: not ready after 30 s", namespace, pod)
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		stop()
		return 0, nil, fmt.Errorf("port forward to %s/%s: %v", namespace, pod, err)
	}
	return int(ports[0].Local), stop, nil
}
