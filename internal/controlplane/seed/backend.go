// Package seed is the scale-out control-plane backend: each cluster's
// control plane runs as workloads in a seed cluster (any conformant
// Kubernetes cluster, a Lotse cluster included), in a namespace of its
// own: etcd as a StatefulSet on persistent volumes, the API server with
// its konnectivity server as a Deployment behind a NodePort Service, and
// the controller-manager and scheduler as leader-elected Deployments.
// Kubernetes schedules, restarts and spreads them; the backend renders
// and applies them and reads their state.
//
// The PKI stays with the manager (the same files the process backend
// keeps), and each component gets only the credentials it needs as a
// Secret. The host serves the API on 127.0.0.1 and on the gateway of the
// cluster's machines, forwarding to the seed's node ports, so clients
// and machines reach a seed-hosted control plane as they reach a local
// one.
package seed

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/images"
	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/ports"
	"github.com/lotse/lotse/internal/releases"
	"github.com/lotse/lotse/internal/supervisor"
	"github.com/lotse/lotse/internal/tasks"
)

// ImageLoader makes images available to a seed's nodes: imported into
// their container runtime, or pushed to the registry they pull from.
type ImageLoader interface {
	// Load returns, by each image's Ref, the reference the seed's pods
	// run it by: every image's, when they are pushed to a registry; none
	// when they are imported into the nodes under their Ref.
	Load(ctx context.Context, seed string, imgs []images.Image) (map[string]string, error)
}

// NodesNetworks allocates the networks of clusters' machines, shared with
// the other backend of the state directory.
type NodesNetworks interface {
	AllocateNodesCIDR(spec controlplane.Spec, record func(cidr string) error) error
}

// Backend hosts control planes on seeds.
type Backend struct {
	// StateDir is the state directory the process backend uses too: a
	// control plane's PKI and layout live in STATE/<key>.
	StateDir string
	// Supervisor runs the host's forwarders in front of the seed.
	Supervisor *supervisor.Supervisor
	// LotseBinary runs the forwarders (`lotse loadbalancer`).
	LotseBinary string
	Seeds       Connector
	Images      ImageLoader
	Networks    NodesNetworks
	// Locate names the seed of a control plane known only by its key,
	// so that a manager without its directory finds the state there.
	Locate Locator
	// ControlPlaneImage, if set, is one image that holds every release's
	// binaries at the paths the manager has them (the image of a manager
	// installed in a cluster): the control plane's pods run it, and no
	// image is built or loaded.
	ControlPlaneImage string
	// ImagePullCredentials, if set, is a Docker config file's content
	// (its "auths") the control planes' pods pull their images with: it
	// goes into each control plane's namespace as an image pull Secret.
	ImagePullCredentials []byte

	clients  clients
	layoutMu sync.Mutex
	// locks serialise a control plane's restore with the start of its
	// etcd.
	locks sync.Map
}

func (b *Backend) lock(key string) func() {
	m, _ := b.locks.LoadOrStore(key, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

var _ controlplane.Backend = (*Backend)(nil)

// Task names.
const (
	TaskPlacement         = "seed-placement"
	TaskPKI               = "pki"
	TaskImages            = "seed-images"
	TaskObjects           = "seed-objects"
	TaskEtcd              = "etcd"
	TaskAPIServer         = "kube-apiserver"
	TaskEndpoint          = "endpoint"
	TaskControllerManager = "kube-controller-manager"
	TaskScheduler         = "kube-scheduler"
)

// EndpointTask is the task after which the API answers on the host.
func EndpointTask(controlplane.Spec) string { return TaskEndpoint }

// Dir is the directory of a control plane (the process backend's too).
func (b *Backend) Dir(key string) string { return filepath.Join(b.StateDir, filepath.FromSlash(key)) }

// PKI returns the PKI files of a control plane.
func (b *Backend) PKI(key string) pki.ClusterPKI {
	return pki.ClusterPKI{Dir: filepath.Join(b.Dir(key), "pki")}
}

func (b *Backend) client(ctx context.Context, seed string) (*seedClient, error) {
	return b.clients.get(ctx, b.Seeds, seed)
}

// ensureLayout places a control plane on spec.Seed once; later calls
// return what was recorded.
func (b *Backend) ensureLayout(ctx context.Context, spec controlplane.Spec) (Layout, error) {
	b.layoutMu.Lock()
	defer b.layoutMu.Unlock()
	if _, err := b.LoadLayout(spec.Key); errors.Is(err, os.ErrNotExist) && spec.Seed != "" {
		// Placed before, by a manager whose directory this one has not.
		if _, err := b.restoreState(ctx, spec.Seed, spec.Key); err != nil {
			return Layout{}, err
		}
	}
	if l, err := b.LoadLayout(spec.Key); err == nil {
		switch {
		case spec.Seed != "" && l.Seed != spec.Seed:
			return l, fmt.Errorf("the control plane runs on seed %s and cannot move to %s", l.Seed, spec.Seed)
		case l.HighAvailability && !spec.HighAvailability:
			return l, errors.New("a highly available control plane does not shrink to one replica; create a new cluster (and restore a backup into it) for that")
		case spec.HighAvailability && !l.HighAvailability:
			// Made highly available: etcd grows from its one member
			// first (TaskEtcd), then the rest gets its replicas.
			l.HighAvailability, l.EtcdJoined, l.EtcdGrown = true, 1, true
			if err := b.saveLayout(spec.Key, l); err != nil {
				return l, err
			}
		}
		return l, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return l, err
	}
	if spec.Seed == "" {
		return Layout{}, errNoSeed
	}
	if spec.SharedDatastore {
		return Layout{}, errors.New("the shared datastore is not offered on seeds")
	}
	n := 1
	if !spec.WithoutTunnel {
		n++
	}
	p, err := ports.Allocate(n)
	if err != nil {
		return Layout{}, err
	}
	exposure, err := b.Seeds.APIServerService(ctx, spec.Seed)
	if err != nil {
		return Layout{}, fmt.Errorf("seed %s: %w", spec.Seed, err)
	}
	l := Layout{Seed: spec.Seed, Namespace: NamespaceFor(b.Supervisor.Owner(), spec.Key), APIPort: p[0], HighAvailability: spec.HighAvailability, Service: exposure}
	if !spec.WithoutTunnel {
		l.TunnelPort = p[1]
	}
	err = b.Networks.AllocateNodesCIDR(spec, func(cidr string) error {
		l.NodesCIDR = cidr
		return b.saveLayout(spec.Key, l)
	})
	return l, err
}

func (b *Backend) ensurePKI(spec controlplane.Spec, l Layout) (pki.ClusterPKI, error) {
	p, err := pki.EnsureCluster(b.PKI(spec.Key).Dir, pki.ClusterParams{
		Name:                   spec.Name,
		APIServerHosts:         l.APIServerHosts(),
		EtcdHosts:              l.EtcdHosts(),
		ServiceCIDR:            spec.ServiceCIDR,
		EncryptionProvider:     spec.EncryptionProvider,
		EncryptedResources:     spec.EncryptedResources,
		ServiceAccountKeyStage: spec.Rotation.ServiceAccountKey,
		EncryptionKeyStage:     spec.Rotation.EncryptionKey,
		CAStage:                spec.Rotation.CA,
	})
	if err != nil {
		return p, err
	}
	return p, p.WriteKubeconfig(spec.Name, pki.AdminName, l.Endpoint())
}

// Images returns the images of a release's control plane: each made of
// the release's static binary.
func Images(bins releases.Binaries) []images.Image {
	rel := bins.Release
	out := []images.Image{
		images.FromBinary(etcdName, "v"+rel.Etcd, bins.Path("etcd"), nil),
		images.FromBinary(apiServerName, "v"+rel.Version, bins.Path("kube-apiserver"), nil),
		images.FromBinary(controllerManagerName, "v"+rel.Version, bins.Path("kube-controller-manager"), nil),
		images.FromBinary(schedulerName, "v"+rel.Version, bins.Path("kube-scheduler"), nil),
	}
	if rel.Konnectivity != "" {
		out = append(out, images.FromBinary(tunnelServerName, "v"+rel.Konnectivity, bins.Path("konnectivity-server"), nil))
	}
	return out
}

// imageRefs are the references the pods run: the manager's own image, or
// each component's, as the ImageLoader made them available (pulled).
func (b *Backend) imageRefs(bins releases.Binaries, pulled map[string]string) ImageRefs {
	if img := b.ControlPlaneImage; img != "" {
		cmds := map[string]string{}
		for _, c := range []string{etcdName, apiServerName, controllerManagerName, schedulerName, tunnelServerName} {
			cmds[c] = bins.Path(c)
		}
		return ImageRefs{Etcd: img, APIServer: img, ControllerManager: img, Scheduler: img, TunnelServer: img, Commands: cmds, PullCredentials: b.ImagePullCredentials}
	}
	rel := bins.Release
	ref := func(name, tag string) string {
		r := images.Ref(name, tag)
		if p := pulled[r]; p != "" {
			return p
		}
		return r
	}
	return ImageRefs{
		Etcd:              ref(etcdName, "v"+rel.Etcd),
		APIServer:         ref(apiServerName, "v"+rel.Version),
		ControllerManager: ref(controllerManagerName, "v"+rel.Version),
		Scheduler:         ref(schedulerName, "v"+rel.Version),
		TunnelServer:      ref(tunnelServerName, "v"+rel.Konnectivity),
		PullCredentials:   b.ImagePullCredentials,
	}
}

// secrets reads each component's credentials from the PKI.
func secrets(spec controlplane.Spec, l Layout, p pki.ClusterPKI) (map[string]map[string][]byte, error) {
	out := map[string]map[string][]byte{}
	for component, files := range credentialFiles(spec, p) {
		data := map[string][]byte{}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			data[baseName(f)] = b
		}
		out[component] = data
	}
	for component, user := range map[string]string{controllerManagerName: pki.ControllerMgrName, schedulerName: pki.SchedulerName} {
		kc, err := p.KubeconfigFor(spec.Name, user, l.InSeedServer())
		if err != nil {
			return nil, err
		}
		out[component][kubeconfigFile] = kc
	}
	if !spec.WithoutTunnel {
		out[apiServerName][egressSelectorFile] = []byte(egressSelector())
	}
	return out, nil
}

// digest names a Secret's content.
func digest(data map[string][]byte) string {
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s\x00%d\x00", k, len(data[k]))
		h.Write(data[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func sortStrings(s []string) { sort.Strings(s) }

// Tasks brings the control plane to spec on its seed.
func (b *Backend) Tasks(spec controlplane.Spec) []tasks.Task {
	var layout Layout
	var clusterPKI pki.ClusterPKI
	var pulled map[string]string
	var sc *seedClient
	var r render
	ts := []tasks.Task{
		{Name: TaskPlacement, Run: func(ctx context.Context) (bool, string, error) {
			l, err := b.ensureLayout(ctx, spec)
			if err != nil {
				return false, "", err
			}
			if sc, err = b.client(ctx, l.Seed); err != nil {
				return false, "", err
			}
			// The API server's certificate names the address: it comes
			// first.
			l, msg, err := b.ensureExternalAddress(ctx, sc, spec, l)
			layout = l
			return msg == "" && err == nil, msg, err
		}},
		{Name: TaskPKI, DependsOn: []string{TaskPlacement}, Run: func(ctx context.Context) (bool, string, error) {
			p, err := b.ensurePKI(spec, layout)
			clusterPKI = p
			if err != nil {
				return false, "", err
			}
			// Kept in the seed before anything there uses it.
			if err := b.saveState(ctx, sc, spec.Key, layout); err != nil {
				return false, "", fmt.Errorf("keeping the control plane's state on seed %s: %w", layout.Seed, err)
			}
			return true, "", nil
		}},
		{Name: TaskImages, DependsOn: []string{TaskPlacement}, Run: func(ctx context.Context) (bool, string, error) {
			if !spec.WithoutTunnel && spec.Binaries.Release.Konnectivity == "" {
				return false, "", fmt.Errorf("kubernetes %s has no konnectivity version in the catalog; its control plane cannot run on a seed", spec.Binaries.Release.Version)
			}
			if b.ControlPlaneImage != "" {
				return true, "", nil // the seed's nodes run the manager's own image
			}
			p, err := b.Images.Load(ctx, layout.Seed, Images(spec.Binaries))
			if err != nil {
				return false, "", fmt.Errorf("loading the control plane's images into seed %s: %w", layout.Seed, err)
			}
			pulled = p
			return true, "", nil
		}},
		{Name: TaskObjects, DependsOn: []string{TaskPKI, TaskImages}, Run: func(ctx context.Context) (bool, string, error) {
			s, err := secrets(spec, layout, clusterPKI)
			if err != nil {
				return false, "", err
			}
			r = render{spec: spec, layout: layout, images: b.imageRefs(spec.Binaries, pulled), secrets: s}
			if err := sc.apply(ctx, r.objects(stageBase)...); err != nil {
				return false, "", err
			}
			return true, "", sc.pruneImagePullSecret(ctx, r)
		}},
		{Name: TaskEtcd, DependsOn: []string{TaskObjects}, Run: func(ctx context.Context) (bool, string, error) {
			// A restore that stopped half way is finished or undone
			// before etcd starts on its volumes.
			unlock := b.lock(spec.Key)
			err := b.settleRestore(ctx, sc, spec, layout)
			unlock()
			if err != nil {
				return false, "", fmt.Errorf("finishing an interrupted restore: %w", err)
			}
			if layout.etcdGrowing() {
				return b.growEtcd(ctx, sc, spec, r)
			}
			return b.rollOut(ctx, sc, r, stageEtcd)
		}},
		// After etcd: in an upgrade the API servers move only once every
		// member runs the new version.
		{Name: TaskAPIServer, DependsOn: []string{TaskEtcd}, Run: func(ctx context.Context) (bool, string, error) {
			return b.rollOut(ctx, sc, r, stageAPIServer)
		}},
		{Name: TaskEndpoint, DependsOn: []string{TaskAPIServer}, Run: func(ctx context.Context) (bool, string, error) {
			if err := b.ensureForwarders(ctx, sc, spec, layout, false); err != nil {
				return false, "", err
			}
			ok, msg := probeReadyz(ctx, layout.Endpoint(), clusterPKI)
			return ok, msg, nil
		}},
		{Name: TaskControllerManager, DependsOn: []string{TaskAPIServer}, Run: func(ctx context.Context) (bool, string, error) {
			return b.rollOut(ctx, sc, r, stageControllerManager)
		}},
	}
	if !spec.WithoutScheduler {
		ts = append(ts, tasks.Task{Name: TaskScheduler, DependsOn: []string{TaskAPIServer}, Run: func(ctx context.Context) (bool, string, error) {
			return b.rollOut(ctx, sc, r, stageScheduler)
		}})
	}
	return ts
}

// workload is the observed rollout of one component.
type workload struct {
	replicas, ready, updated int32
	// current: the controller saw the newest spec and every pod runs it.
	current bool
	found   bool
}

func (sc *seedClient) workload(ctx context.Context, namespace, component string) (workload, error) {
	if component == etcdName {
		s, err := sc.kube.AppsV1().StatefulSets(namespace).Get(ctx, etcdName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return workload{}, nil
		} else if err != nil {
			return workload{}, err
		}
		return statefulSetWorkload(s), nil
	}
	d, err := sc.kube.AppsV1().Deployments(namespace).Get(ctx, component, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return workload{}, nil
	} else if err != nil {
		return workload{}, err
	}
	return deploymentWorkload(d), nil
}

func statefulSetWorkload(s *appsv1.StatefulSet) workload {
	want := int32(1)
	if s.Spec.Replicas != nil {
		want = *s.Spec.Replicas
	}
	st := s.Status
	return workload{found: true, replicas: want, ready: st.ReadyReplicas, updated: st.UpdatedReplicas,
		current: st.ObservedGeneration >= s.Generation && st.UpdatedReplicas == want && st.CurrentRevision == st.UpdateRevision}
}

func deploymentWorkload(d *appsv1.Deployment) workload {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	st := d.Status
	return workload{found: true, replicas: want, ready: st.ReadyReplicas, updated: st.UpdatedReplicas,
		current: st.ObservedGeneration >= d.Generation && st.UpdatedReplicas == want && st.Replicas == want}
}

// healthy: enough instances are ready (a quorum of etcd, one of the rest).
func (w workload) healthy(component string) bool {
	if component == etcdName {
		return w.ready >= w.replicas/2+1
	}
	return w.ready >= 1
}

// rollOut applies a component's stage and reports whether every instance
// runs it and is ready.
func (b *Backend) rollOut(ctx context.Context, sc *seedClient, r render, stage string) (bool, string, error) {
	if err := sc.apply(ctx, r.objects(stage)...); err != nil {
		return false, "", err
	}
	done, msg, err := b.workloadDone(ctx, sc, r.layout, stage)
	if !done || err != nil {
		return done, msg, err
	}
	// Every pod runs with the current credentials: the older go.
	return true, "", sc.deleteOldSecrets(ctx, r.ns(), stage, r.secretName(stage))
}

func (b *Backend) workloadDone(ctx context.Context, sc *seedClient, l Layout, component string) (bool, string, error) {
	w, err := sc.workload(ctx, l.Namespace, component)
	if err != nil {
		return false, "", err
	}
	if !w.current || w.ready < w.replicas {
		msg := fmt.Sprintf("%s: %d of %d ready, %d updated", component, w.ready, w.replicas, w.updated)
		if why := sc.podTrouble(ctx, l.Namespace, component); why != "" {
			msg += " (" + why + ")"
		}
		return false, msg, nil
	}
	return true, "", nil
}

// ensureExternalAddress, for a control plane behind the seed's load
// balancer, applies the API servers' Service and records the address the
// load balancer gives it. It returns why it waits, if it does. Until the
// API server's certificate exists, the seed's setting is read again: a
// cluster waiting on a seed without load balancers goes on once the seed
// says NodePort. After, the exposure stays what the certificate names.
// A load balancer that moves the Service to a new address is followed:
// the certificate is issued again for it and the endpoint changes. One
// that has lost its address for now (or a Service deleted, applied again
// later) keeps the recorded one.
func (b *Backend) ensureExternalAddress(ctx context.Context, sc *seedClient, spec controlplane.Spec, l Layout) (Layout, string, error) {
	if l.ExternalAddress != "" {
		svc, err := sc.kube.CoreV1().Services(l.Namespace).Get(ctx, apiServerService, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return l, "", nil
		} else if err != nil {
			return l, "", err
		}
		addr := ingressAddress(svc)
		if addr == "" || addr == l.ExternalAddress {
			return l, "", nil
		}
		log.FromContext(ctx).Info("the seed's load balancer moved the API servers", "cluster", spec.Key, "from", l.ExternalAddress, "to", addr)
		l, err = b.updateLayout(spec.Key, func(l *Layout) { l.ExternalAddress = addr })
		return l, "", err
	}
	if _, err := os.Stat(b.PKI(spec.Key).Cert(pki.APIServerName)); errors.Is(err, os.ErrNotExist) {
		exposure, err := b.Seeds.APIServerService(ctx, l.Seed)
		if err != nil {
			return l, "", fmt.Errorf("seed %s: %w", l.Seed, err)
		}
		if !sameExposure(exposure, l.Service) {
			if l, err = b.updateLayout(spec.Key, func(l *Layout) { l.Service = exposure }); err != nil {
				return l, "", err
			}
		}
	} else if err != nil {
		return l, "", err
	}
	if !l.behindLoadBalancer() {
		return l, "", nil
	}
	r := render{spec: spec, layout: l}
	if err := sc.apply(ctx, r.objects(stageBase)...); err != nil {
		return l, "", err
	}
	svc, err := sc.kube.CoreV1().Services(l.Namespace).Get(ctx, apiServerService, metav1.GetOptions{})
	if err != nil {
		return l, "", err
	}
	addr := ingressAddress(svc)
	if addr == "" {
		return l, fmt.Sprintf("waiting for seed %s to give Service %s/%s a load-balancer address (a seed without load balancers needs spec.apiServerService.type: NodePort)",
			l.Seed, l.Namespace, apiServerService), nil
	}
	l, err = b.updateLayout(spec.Key, func(l *Layout) { l.ExternalAddress = addr })
	return l, "", err
}

// ingressAddress is the first address a load balancer gave a Service.
func ingressAddress(svc *corev1.Service) string {
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IP != "" {
			return ing.IP
		}
		if ing.Hostname != "" {
			return ing.Hostname
		}
	}
	return ""
}

func sameExposure(a, b controlplane.ServiceExposure) bool {
	return a.LoadBalancer == b.LoadBalancer && maps.Equal(a.Annotations, b.Annotations)
}

// updateLayout changes the recorded layout under the lock, from what is
// on disk now, and returns it.
func (b *Backend) updateLayout(key string, change func(*Layout)) (Layout, error) {
	b.layoutMu.Lock()
	defer b.layoutMu.Unlock()
	l, err := b.LoadLayout(key)
	if err != nil {
		return l, err
	}
	change(&l)
	return l, b.saveLayout(key, l)
}

// forwarder is a `lotse loadbalancer` on this host in front of the seed.
func (b *Backend) forwarder(key, name, listen string, to []string, p *pki.ClusterPKI) supervisor.Spec {
	args := []string{"loadbalancer", "--listen=" + listen}
	if p != nil {
		// The API servers' certificate names localhost, not the seed's
		// node addresses.
		args = append(args, "--health-path=/readyz", "--ca-file="+p.TrustBundle(), "--server-name=localhost")
	}
	for _, t := range to {
		args = append(args, "--backend="+t)
	}
	return supervisor.Spec{Name: key + "/" + name + "-0", Path: b.LotseBinary, Args: args,
		LogFile: filepath.Join(b.Dir(key), "logs", name+".log"), Tier: 2}
}

// nodePorts are the seed's node ports of the API (and the tunnel).
func (sc *seedClient) nodePorts(ctx context.Context, l Layout) (api, tunnel int32, err error) {
	svc, err := sc.kube.CoreV1().Services(l.Namespace).Get(ctx, apiServerService, metav1.GetOptions{})
	if err != nil {
		return 0, 0, err
	}
	for _, p := range svc.Spec.Ports {
		switch p.Port {
		case apiServerPort:
			api = p.NodePort
		case tunnelAgentPort:
			tunnel = p.NodePort
		}
	}
	if api == 0 {
		return 0, 0, fmt.Errorf("service %s/%s has no node port yet", l.Namespace, apiServerService)
	}
	return api, tunnel, nil
}

// ensureForwarders runs the host's forwarders: the endpoint on 127.0.0.1
// (unless the seed's load balancer is the endpoint) and, with nodes, the API and the tunnel on the gateway.
func (b *Backend) ensureForwarders(ctx context.Context, sc *seedClient, spec controlplane.Spec, l Layout, nodes bool) error {
	addrs, err := sc.nodeAddresses(ctx)
	if err != nil {
		return err
	}
	apiPort, tunnelPort, err := sc.nodePorts(ctx, l)
	if err != nil {
		return err
	}
	p := b.PKI(spec.Key)
	var specs []supervisor.Spec
	if !l.behindLoadBalancer() {
		specs = append(specs, b.forwarder(spec.Key, "seed-endpoint", fmt.Sprintf("127.0.0.1:%d", l.APIPort), backends(addrs, apiPort), &p))
	}
	if nodes {
		specs = append(specs, b.forwarder(spec.Key, "seed-node-endpoint", fmt.Sprintf("%s:%d", l.Gateway(), l.APIPort), backends(addrs, apiPort), &p))
		if l.TunnelPort != 0 && tunnelPort != 0 {
			specs = append(specs, b.forwarder(spec.Key, "seed-tunnel-endpoint", fmt.Sprintf("%s:%d", l.Gateway(), l.TunnelPort), backends(addrs, tunnelPort), nil))
		}
	}
	for _, s := range specs {
		if err := b.Supervisor.Ensure(s); err != nil {
			return err
		}
	}
	return nil
}

func probeReadyz(ctx context.Context, endpoint string, p pki.ClusterPKI) (bool, string) {
	caPEM, err := os.ReadFile(p.TrustBundle())
	if err != nil {
		return false, err.Error()
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"/readyz", nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := c.Do(req)
	if err != nil {
		return false, "API not answering yet: " + err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Sprintf("/readyz: %d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return true, ""
}

// components in upgrade order.
var components = []string{etcdName, apiServerName, controllerManagerName, schedulerName}

// Status observes the control plane in its seed.
func (b *Backend) Status(ctx context.Context, spec controlplane.Spec) controlplane.Status {
	l, err := b.layout(ctx, spec.Key, spec.Seed)
	if err != nil {
		return controlplane.Status{APIServerMessage: "control plane not created yet"}
	}
	st := controlplane.Status{Endpoint: l.Endpoint()}
	p := b.PKI(spec.Key)
	if st.Endpoint == "" {
		st.APIServerMessage = "waiting for the seed's load balancer to give the API an address"
	} else {
		st.APIServerAvailable, st.APIServerMessage = probeReadyz(ctx, st.Endpoint, p)
	}
	if prov, err := p.PrimaryEncryptionProvider(); err == nil {
		st.EncryptionProvider = prov
	}
	sc, err := b.client(ctx, l.Seed)
	for _, c := range components {
		if c == schedulerName && spec.WithoutScheduler {
			continue
		}
		if err != nil {
			st.Components = append(st.Components, controlplane.ComponentHealth{Name: c, Message: err.Error()})
			continue
		}
		w, werr := sc.workload(ctx, l.Namespace, c)
		h := controlplane.ComponentHealth{Name: c, Healthy: werr == nil && w.found && w.healthy(c)}
		switch {
		case werr != nil:
			h.Message = werr.Error()
		case !w.found:
			h.Message = "not created yet"
		case !h.Healthy:
			h.Message = fmt.Sprintf("%d of %d ready on seed %s", w.ready, w.replicas, l.Seed)
		}
		st.Components = append(st.Components, h)
		st.Rollout = append(st.Rollout, controlplane.ComponentRollout{Component: c, Updated: int(w.updated), Total: int(w.replicas)})
	}
	return st
}

// AdminKubeconfig returns the cluster-admin kubeconfig.
func (b *Backend) AdminKubeconfig(spec controlplane.Spec) ([]byte, error) {
	return os.ReadFile(b.PKI(spec.Key).Kubeconfig(pki.AdminName))
}

// TunnelCredentials returns what the cluster's konnectivity agents need.
func (b *Backend) TunnelCredentials(spec controlplane.Spec) (controlplane.TunnelCredentials, error) {
	return controlplane.TunnelCredentialsOf(b.PKI(spec.Key))
}

// AddonServing issues (once) an addon's serving certificate.
func (b *Backend) AddonServing(spec controlplane.Spec, name string, dnsNames []string) (controlplane.ServingCredentials, error) {
	return controlplane.AddonServingOf(b.PKI(spec.Key), name, dnsNames)
}

// NodeAccess says where machines reach the control plane: the gateway.
func (b *Backend) NodeAccess(spec controlplane.Spec) (controlplane.NodeAccess, error) {
	l, err := b.LoadLayout(spec.Key)
	if err != nil {
		return controlplane.NodeAccess{}, err
	}
	a := controlplane.NodeAccess{NodesCIDR: l.NodesCIDR, Gateway: l.Gateway(), APIServer: l.NodeEndpoint(), APIPort: l.APIPort, TunnelPort: l.TunnelPort}
	if l.TunnelPort != 0 {
		a.TunnelServers = 1
		if l.HighAvailability && !l.etcdGrowing() {
			a.TunnelServers = 2
		}
	}
	return a, nil
}

// EnsureNodeAccess runs the forwarders on the gateway.
func (b *Backend) EnsureNodeAccess(spec controlplane.Spec) (controlplane.NodeAccess, error) {
	a, err := b.NodeAccess(spec)
	if err != nil {
		return a, err
	}
	l, err := b.LoadLayout(spec.Key)
	if err != nil {
		return a, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	sc, err := b.client(ctx, l.Seed)
	if err != nil {
		return a, err
	}
	return a, b.ensureForwarders(ctx, sc, spec, l, true)
}

// RestartComponent restarts a component's pods, one at a time as its
// rollout strategy says, and waits until the rollout is done.
func (b *Backend) RestartComponent(ctx context.Context, spec controlplane.Spec, component string) error {
	l, err := b.layout(ctx, spec.Key, spec.Seed)
	if err != nil {
		return err
	}
	sc, err := b.client(ctx, l.Seed)
	if err != nil {
		return err
	}
	kind := "Deployment"
	switch component {
	case etcdName:
		kind = "StatefulSet"
	case apiServerName, controllerManagerName, schedulerName:
	default:
		return fmt.Errorf("unknown component %q", component)
	}
	if err := sc.patchTemplateAnnotation(ctx, kind, l.Namespace, component, AnnotationRestartedAt, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		return err
	}
	for {
		// The controller may not have seen the patch yet: give it a moment.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
		if done, _, err := b.workloadDone(ctx, sc, l, component); err != nil {
			return err
		} else if done {
			return nil
		}
	}
}

// BackupCredentials returns the control plane's PKI files by name.
func (b *Backend) BackupCredentials(spec controlplane.Spec) (map[string][]byte, error) {
	return controlplane.BackupCredentialsOf(b.PKI(spec.Key))
}

// Stop scales the control plane's workloads to zero (the data stays on
// its volumes) and stops the host's forwarders; the next Tasks run scales
// them back.
func (b *Backend) Stop(ctx context.Context, key string) error {
	l, err := b.layout(ctx, key, "")
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	b.Supervisor.StopPrefix(key + "/")
	if err := supervisor.WaitStopped(ctx, b.Supervisor.Owner(), key+"/"); err != nil {
		return err
	}
	sc, err := b.client(ctx, l.Seed)
	if err != nil {
		return err
	}
	return sc.scaleToZero(ctx, l.Namespace)
}

// Delete removes the control plane's namespace from its seed (with its
// volumes) and, once the seed reports it gone, the control plane's
// directory. Until then it returns an error wrapping
// controlplane.ErrInProgress: the caller comes back.
func (b *Backend) Delete(ctx context.Context, key string) error {
	l, err := b.layout(ctx, key, "")
	if errors.Is(err, os.ErrNotExist) {
		return os.RemoveAll(b.Dir(key))
	} else if err != nil {
		return err
	}
	b.Supervisor.KillPrefix(key + "/")
	if err := supervisor.WaitStopped(ctx, b.Supervisor.Owner(), key+"/"); err != nil {
		return err
	}
	sc, err := b.client(ctx, l.Seed)
	if err != nil {
		return err
	}
	ns, err := sc.kube.CoreV1().Namespaces().Get(ctx, l.Namespace, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return os.RemoveAll(b.Dir(key))
	case err != nil:
		return err
	case ns.DeletionTimestamp == nil:
		if err := sc.kube.CoreV1().Namespaces().Delete(ctx, l.Namespace, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return fmt.Errorf("%w: namespace %s on seed %s is being deleted", controlplane.ErrInProgress, l.Namespace, l.Seed)
}
