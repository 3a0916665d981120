package manager_test

// How one manager copes with many clusters: the real manager (every
// controller Lotse runs) against a real management API (etcd and
// kube-apiserver of the default release), with the control planes and
// the tenant APIs faked, since a thousand real control planes do not fit
// one machine. The fakes live here, in test code, and say so in their
// names.

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/controller/controllertest"
	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/controlplane/process"
	"github.com/lotse/lotse/internal/managementplane"
	"github.com/lotse/lotse/internal/manager"
	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/releases"
	"github.com/lotse/lotse/internal/releases/releasestest"
	"github.com/lotse/lotse/internal/supervisor"
	"github.com/lotse/lotse/internal/tasks"
)

// startManagementAPI runs a real management control plane (as `lotse up`
// does) and returns a client config for it; it is stopped when the test
// ends.
func startManagementAPI(tb testing.TB) *rest.Config {
	tb.Helper()
	bins := releasestest.Binaries(tb)
	dir, err := os.MkdirTemp("", "lotse-scale-") // short: etcd's unix sockets live below
	if err != nil {
		tb.Fatal(err)
	}
	sup := supervisor.New(supervisor.OwnerID(dir), supervisor.Options{})
	tb.Cleanup(func() {
		sup.StopAll()
		os.RemoveAll(dir)
	})
	b := process.New(dir, sup)
	spec := managementplane.ManagementSpec(bins)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		results, err := tasks.Run(ctx, b.Tasks(spec))
		if err != nil {
			tb.Fatal(err)
		}
		if results.Done() {
			break
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("management API not up: %s", results.Describe())
		case <-time.After(100 * time.Millisecond):
		}
	}
	kc, err := b.AdminKubeconfig(spec)
	if err != nil {
		tb.Fatal(err)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kc)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 50, 100 // as lotse up's manager
	return cfg
}

// fakeTenantAPI stands in for the API servers of all tenant clusters: one
// TLS server that tells tenants apart by their client certificate's
// common name, answers the health probes and keeps the few objects the
// cluster controller writes into a workerless cluster (the `kubernetes`
// Service's Endpoints and EndpointSlice) in memory, counting writes. It
// runs in a process of its own (this test binary, started again), so
// that its connections do not count as the manager's memory.
type fakeTenantAPI struct {
	url      string
	serverCA []byte
	ca       *pki.CA
}

// fakeTenantAPIEnv, set to a directory, makes the test binary serve the
// fake tenant API and write where into that directory.
const fakeTenantAPIEnv = "LOTSE_FAKE_TENANT_API_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(fakeTenantAPIEnv); dir != "" {
		if err := serveFakeTenantAPI(dir); err != nil {
			fmt.Fprintln(os.Stderr, "fake tenant API:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// The manager's logs would be most of what a run of a thousand
	// clusters prints; LOTSE_SCALE_LOG=1 shows them.
	if os.Getenv("LOTSE_SCALE_LOG") != "" {
		ctrl.SetLogger(zap.New(zap.UseDevMode(true)))
	} else {
		ctrl.SetLogger(logr.Discard())
	}
	os.Exit(m.Run())
}

func startFakeTenantAPI(tb testing.TB) *fakeTenantAPI {
	tb.Helper()
	dir := tb.TempDir()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fakeTenantAPIEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe() // its end is the server's end
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "url")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatal("the fake tenant API did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	read := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			tb.Fatal(err)
		}
		return data
	}
	f := &fakeTenantAPI{url: string(read("url")), serverCA: read("server-ca.pem")}
	block, _ := pem.Decode(read("ca.pem"))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	block, _ = pem.Decode(read("ca-key.pem"))
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	f.ca = &pki.CA{Cert: cert, Key: key.(crypto.Signer)}
	return f
}

// Writes is how many objects the tenants' clients created or updated.
func (f *fakeTenantAPI) Writes(tb testing.TB) int {
	tb.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(f.serverCA)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	resp, err := hc.Get(f.url + "/fake/writes")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	n, err := strconv.Atoi(string(data))
	if err != nil {
		tb.Fatalf("writes: %q", data)
	}
	return n
}

// fakeTenantStore is the server side.
type fakeTenantStore struct {
	mu      sync.Mutex
	objects map[string]runtime.Object // by tenant + path
	writes  int
}

func serveFakeTenantAPI(dir string) error {
	ca, err := pki.NewCA("fake-tenants-ca")
	if err != nil {
		return err
	}
	keyPEM, err := pki.KeyPEM(ca.Key)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	store := &fakeTenantStore{objects: map[string]runtime.Object{}}
	server := httptest.NewUnstartedServer(http.HandlerFunc(store.serve))
	server.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool, MinVersion: tls.VersionTLS12}
	server.StartTLS()
	defer server.Close()
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"server-ca.pem", pki.CertPEM(server.Certificate())},
		{"ca.pem", pki.CertPEM(ca.Cert)},
		{"ca-key.pem", keyPEM},
		{"url", []byte(server.URL)}, // last: it says the rest is there
	} {
		if err := os.WriteFile(filepath.Join(dir, f.name+".tmp"), f.data, 0o600); err != nil {
			return err
		}
		if err := os.Rename(filepath.Join(dir, f.name+".tmp"), filepath.Join(dir, f.name)); err != nil {
			return err
		}
	}
	// Until the test ends (it closes our stdin, or dies).
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

func status(w http.ResponseWriter, r *http.Request, code int, reason string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"fake tenant API: %s %s: %s","reason":%q,"code":%d}`,
		r.Method, r.URL.Path, reason, reason, code)
}

func (f *fakeTenantStore) serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/readyz", "/livez", "/healthz":
		io.WriteString(w, "ok")
		return
	case "/fake/writes":
		f.mu.Lock()
		defer f.mu.Unlock()
		fmt.Fprint(w, f.writes)
		return
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		status(w, r, http.StatusUnauthorized, "Unauthorized")
		return
	}
	tenant := r.TLS.PeerCertificates[0].Subject.CommonName
	body, _ := io.ReadAll(r.Body)
	// Clients send and accept JSON, protobuf or CBOR: answer in kind.
	mediaType, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
	if r.Method == http.MethodGet {
		mediaType, _, _ = strings.Cut(strings.Split(r.Header.Get("Accept"), ",")[0], ";")
	}
	info, ok := runtime.SerializerInfoForMediaType(tenantCodecs.SupportedMediaTypes(), mediaType)
	if !ok {
		info, _ = runtime.SerializerInfoForMediaType(tenantCodecs.SupportedMediaTypes(), runtime.ContentTypeJSON)
	}
	reply := func(code int, obj runtime.Object) {
		var buf bytes.Buffer
		if err := tenantCodecs.EncoderForVersion(info.Serializer, obj.GetObjectKind().GroupVersionKind().GroupVersion()).Encode(obj, &buf); err != nil {
			status(w, r, http.StatusInternalServerError, "InternalError")
			return
		}
		w.Header().Set("Content-Type", info.MediaType)
		w.WriteHeader(code)
		w.Write(buf.Bytes())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.Method {
	case http.MethodGet:
		obj, ok := f.objects[tenant+r.URL.Path]
		if !ok {
			status(w, r, http.StatusNotFound, "NotFound")
			return
		}
		reply(http.StatusOK, obj)
	case http.MethodPost, http.MethodPut:
		obj, _, err := tenantCodecs.UniversalDeserializer().Decode(body, nil, nil)
		if err != nil {
			status(w, r, http.StatusBadRequest, "BadRequest")
			return
		}
		m, err := meta.Accessor(obj)
		if err != nil {
			status(w, r, http.StatusBadRequest, "BadRequest")
			return
		}
		key := tenant + r.URL.Path
		code := http.StatusOK
		if r.Method == http.MethodPost {
			key += "/" + m.GetName()
			code = http.StatusCreated
			if _, ok := f.objects[key]; ok {
				status(w, r, http.StatusConflict, "AlreadyExists")
				return
			}
		}
		f.writes++
		m.SetResourceVersion(strconv.Itoa(f.writes))
		f.objects[key] = obj
		reply(code, obj)
	default:
		// The cluster controller writes nothing else into a workerless
		// cluster; anything else counts, and fails.
		f.writes++
		status(w, r, http.StatusMethodNotAllowed, "MethodNotAllowed")
	}
}

// tenantCodecs read and write the built-in types in every encoding.
var tenantCodecs = serializer.NewCodecFactory(clientgoscheme.Scheme)

// kubeconfig gives a tenant its own client certificate, as every real
// cluster has its own CA and admin credentials (so the manager holds a
// client and a TLS transport per cluster, as it would).
func (f *fakeTenantAPI) kubeconfig(tenant string) ([]byte, error) {
	kp, err := f.ca.Issue(pki.CertSpec{CommonName: tenant, Organization: []string{"system:masters"}, Client: true})
	if err != nil {
		return nil, err
	}
	keyPEM, err := pki.KeyPEM(kp.Key)
	if err != nil {
		return nil, err
	}
	return pki.Kubeconfig(tenant, f.url, f.serverCA, pki.CertPEM(kp.Cert), keyPEM, "admin"), nil
}

// fakeHostedBackend hosts no control plane: each one "starts" startDelay
// after its first task ran, then reports every component healthy, with
// the fake tenant API as its endpoint.
type fakeHostedBackend struct {
	controllertest.FakeBackend
	tenants    *fakeTenantAPI
	startDelay time.Duration

	mu          sync.Mutex
	firstSeen   map[string]time.Time
	kubeconfigs map[string][]byte
}

func (b *fakeHostedBackend) up(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.firstSeen == nil {
		b.firstSeen = map[string]time.Time{}
	}
	t, ok := b.firstSeen[key]
	if !ok {
		b.firstSeen[key] = time.Now()
		return b.startDelay <= 0
	}
	return time.Since(t) >= b.startDelay
}

func (b *fakeHostedBackend) Tasks(spec controlplane.Spec) []tasks.Task {
	return []tasks.Task{{Name: controllertest.TaskName, Run: func(context.Context) (bool, string, error) {
		return b.up(spec.Key), "starting", nil
	}}}
}

func (b *fakeHostedBackend) Status(_ context.Context, spec controlplane.Spec) controlplane.Status {
	ok := b.up(spec.Key)
	var comps []controlplane.ComponentHealth
	for _, name := range []string{"etcd-0", "kube-apiserver-0", "kube-controller-manager-0", "kube-scheduler-0"} {
		comps = append(comps, controlplane.ComponentHealth{Name: name, Healthy: ok})
	}
	return controlplane.Status{Endpoint: b.tenants.url, APIServerAvailable: ok, Components: comps}
}

func (b *fakeHostedBackend) AdminKubeconfig(spec controlplane.Spec) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if kc, ok := b.kubeconfigs[spec.Key]; ok {
		return kc, nil
	}
	kc, err := b.tenants.kubeconfig(spec.Key)
	if err != nil {
		return nil, err
	}
	if b.kubeconfigs == nil {
		b.kubeconfigs = map[string][]byte{}
	}
	b.kubeconfigs[spec.Key] = kc
	return kc, nil
}

// scaleRun is one manager with n clusters, measured.
type scaleRun struct {
	cfg     *rest.Config
	client  client.Client
	backend *fakeHostedBackend
}

// managerRan: controller-runtime refuses a second controller of the same
// name in one process, and its metrics add up across managers; so one
// manager per test binary run.
var managerRan atomic.Bool

func startScaleRun(tb testing.TB, startDelay time.Duration) *scaleRun {
	tb.Helper()
	if managerRan.Swap(true) {
		tb.Skip("a manager ran in this process already: run one test or benchmark of this package at a time, with -count 1 and -benchtime 1x")
	}
	cfg := startManagementAPI(tb)
	tenants := startFakeTenantAPI(tb)
	backend := &fakeHostedBackend{tenants: tenants, startDelay: startDelay}
	stateDir := tb.TempDir()
	sup := supervisor.New(supervisor.OwnerID(stateDir), supervisor.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	done := make(chan struct{}) // closed when the manager returned runErr
	var runErr error
	go func() {
		defer close(done)
		runErr = manager.Run(ctx, cfg, manager.Options{
			Releases:     controllertest.InstalledStore(tb),
			Backend:      backend,
			EndpointTask: func(controlplane.Spec) string { return controllertest.TaskName },
			Provider:     &controllertest.FakeProvider{},
			StateDir:     stateDir,
			Supervisor:   sup,
			FleetDNSAddr: "0",
			Started:      started,
		})
	}()
	tb.Cleanup(func() {
		cancel()
		<-done
		if runErr != nil {
			tb.Errorf("manager: %v", runErr)
		}
	})
	select {
	case <-started:
	case <-done:
		tb.Fatalf("manager ended before it started: %v", runErr)
	case <-time.After(time.Minute):
		tb.Fatal("manager not started after a minute")
	}
	c, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		tb.Fatal(err)
	}
	return &scaleRun{cfg: cfg, client: c, backend: backend}
}

// create makes n workerless clusters in 10 namespaces (tenants), 16 at a
// time.
func (s *scaleRun) create(tb testing.TB, n int) {
	tb.Helper()
	ctx := context.Background()
	for i := range 10 {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("tenant-%d", i)}}
		if err := s.client.Create(ctx, ns); err != nil {
			tb.Fatal(err)
		}
	}
	sem := make(chan struct{}, 16)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("tenant-%d", i%10), Name: fmt.Sprintf("c%04d", i)}}
			c.Spec.Kubernetes.Version = releases.Default().Version
			if err := s.client.Create(ctx, c); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

// waitSettled waits until n clusters are Ready and every controller has
// written their status once (the maintenance controller's first write
// comes last), and returns when they were all Ready.
func (s *scaleRun) waitSettled(tb testing.TB, n int, timeout time.Duration) (allReady time.Time) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		list := &lotsev1.ClusterList{}
		if err := s.client.List(context.Background(), list); err != nil {
			tb.Fatal(err)
		}
		ready, settled := 0, 0
		for _, c := range list.Items {
			if meta.IsStatusConditionTrue(c.Status.Conditions, lotsev1.ConditionReady) && c.Status.ObservedGeneration == c.Generation {
				ready++
				if c.Status.Maintenance != nil {
					settled++
				}
			}
		}
		if ready == n && allReady.IsZero() {
			allReady = time.Now()
		}
		if settled == n {
			return allReady
		}
		if time.Now().After(deadline) {
			var sample string
			for _, c := range list.Items {
				if !meta.IsStatusConditionTrue(c.Status.Conditions, lotsev1.ConditionReady) {
					sample = fmt.Sprintf("; %s/%s is %s: %+v", c.Namespace, c.Name, c.Status.Phase, c.Status.Conditions)
					break
				}
			}
			tb.Fatalf("after %s: %d of %d clusters Ready, %d settled%s", timeout, ready, n, settled, sample)
		}
		time.Sleep(time.Second)
	}
}

// clusterWrites counts the writes to Clusters (status included) during d,
// from a watch.
func (s *scaleRun) clusterWrites(tb testing.TB, d time.Duration) map[string]int {
	tb.Helper()
	wc, err := client.NewWithWatch(s.cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		tb.Fatal(err)
	}
	list := &lotsev1.ClusterList{}
	if err := s.client.List(context.Background(), list); err != nil {
		tb.Fatal(err)
	}
	w, err := wc.Watch(context.Background(), &lotsev1.ClusterList{}, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}})
	if err != nil {
		tb.Fatal(err)
	}
	defer w.Stop()
	writes := map[string]int{}
	last := map[string]*lotsev1.Cluster{}
	for i := range list.Items {
		last[list.Items[i].Namespace+"/"+list.Items[i].Name] = &list.Items[i]
	}
	timeout := time.After(d)
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				tb.Fatal("watch of Clusters ended")
			}
			if ev.Type == watch.Modified {
				if c, ok := ev.Object.(*lotsev1.Cluster); ok {
					key := c.Namespace + "/" + c.Name
					writes[key]++
					if len(writes) <= 3 && writes[key] == 1 {
						tb.Logf("%s written while idle: %s", key, statusChange(last[key], c))
					}
					last[key] = c
				}
			}
		case <-timeout:
			return writes
		}
	}
}

// statusChange says what differs between two versions of a Cluster.
func statusChange(old, cur *lotsev1.Cluster) string {
	if old == nil {
		return "not seen before"
	}
	a, _ := json.Marshal(old.Status)
	b, _ := json.Marshal(cur.Status)
	if string(a) == string(b) {
		return fmt.Sprintf("status unchanged; generation %d -> %d, metadata %v -> %v", old.Generation, cur.Generation, old.Annotations, cur.Annotations)
	}
	return fmt.Sprintf("status %s\n-> %s", a, b)
}

// reconcileStats reads controller-runtime's metrics of one controller:
// how many reconciles ran, and quantiles of their durations (upper bounds
// of the histogram's buckets).
type reconcileStats struct {
	count    float64
	p50, p99 float64 // seconds
}

func readReconcileStats(tb testing.TB, controller string) reconcileStats {
	tb.Helper()
	families, err := crmetrics.Registry.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var st reconcileStats
	var hist *dto.Histogram
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if label(m, "controller") != controller {
				continue
			}
			switch f.GetName() {
			case "controller_runtime_reconcile_total":
				st.count += m.GetCounter().GetValue()
			case "controller_runtime_reconcile_time_seconds":
				hist = m.GetHistogram()
			}
		}
	}
	if hist != nil {
		st.p50, st.p99 = quantile(hist, 0.5), quantile(hist, 0.99)
	}
	return st
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// quantile is the upper bound of the bucket the q-quantile falls in.
func quantile(h *dto.Histogram, q float64) float64 {
	want := q * float64(h.GetSampleCount())
	buckets := h.GetBucket()
	sort.Slice(buckets, func(i, j int) bool { return buckets[i].GetUpperBound() < buckets[j].GetUpperBound() })
	for _, b := range buckets {
		if float64(b.GetCumulativeCount()) >= want {
			return b.GetUpperBound()
		}
	}
	return math.Inf(1)
}

// procStatus reads a field of /proc/self/status in MiB.
func procStatus(tb testing.TB, field string) float64 {
	tb.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return kb / 1024
		}
	}
	tb.Fatalf("no %s in /proc/self/status", field)
	return 0
}

func heapMiB() float64 {
	goruntime.GC()
	var ms goruntime.MemStats
	goruntime.ReadMemStats(&ms)
	return float64(ms.HeapInuse) / (1 << 20)
}

// idleWindow is longer than the cluster controller's periodic look (30 s)
// and the care controller's (15 s): every cluster is looked at in it.
const idleWindow = 35 * time.Second

// A manager with many converged clusters does no work beyond its periodic
// looks: no Cluster is written, nothing is written into a tenant, and the
// reconciles stay at about one per cluster per period.
func TestManagerSettlesManyClusters(t *testing.T) {
	const n = 40
	s := startScaleRun(t, 2*time.Second)
	s.create(t, n)
	s.waitSettled(t, n, 3*time.Minute)
	// The cluster's operation turns from Create to Reconcile on the
	// reconcile after Ready; let that pass.
	time.Sleep(5 * time.Second)

	before, tenantBefore := readReconcileStats(t, "cluster"), s.backend.tenants.Writes(t)
	writes := s.clusterWrites(t, idleWindow)
	after, tenantAfter := readReconcileStats(t, "cluster"), s.backend.tenants.Writes(t)
	if len(writes) > 0 {
		t.Errorf("converged clusters were written while idle: %v", writes)
	}
	if tenantAfter != tenantBefore {
		t.Errorf("%d writes into converged tenants while idle", tenantAfter-tenantBefore)
	}
	reconciles := after.count - before.count
	t.Logf("%d clusters idle for %s: %.0f reconciles, p99 %.3f s", n, idleWindow, reconciles, after.p99)
	// One look per cluster per 30 s, and as many from other causes
	// (the care controller's refreshes), is the most a quiet manager does.
	if limit := float64(n) * 2 * idleWindow.Seconds() / 30; reconciles > limit {
		t.Errorf("%.0f reconciles of %d idle clusters in %s, want at most %.0f: a reconcile storm", reconciles, n, idleWindow, limit)
	}
	if reconciles < float64(n) {
		t.Errorf("%.0f reconciles of %d clusters in %s: the periodic look did not run", reconciles, n, idleWindow)
	}
}

// BenchmarkManagerClusters: one manager, LOTSE_SCALE_CLUSTERS (default
// 1,000) workerless clusters whose fake control planes take 3 s to start;
// time until all are Ready, the manager's memory, the cluster
// controller's reconcile times, and what the idle manager does.
//
//	go test -count=1 -run '^$' -bench ManagerClusters -benchtime 1x -timeout 40m ./internal/manager/
func BenchmarkManagerClusters(b *testing.B) {
	n := 1000
	if v := os.Getenv("LOTSE_SCALE_CLUSTERS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 10 {
			b.Fatalf("LOTSE_SCALE_CLUSTERS=%q: want a number of clusters, 10 or more", v)
		}
	}
	for range b.N {
		s := startScaleRun(b, 3*time.Second)
		baseRSS := procStatus(b, "VmRSS")
		var depthMu sync.Mutex
		maxDepth := 0.0
		stop := make(chan struct{})
		sampled := make(chan struct{})
		stopSampling := sync.OnceFunc(func() { close(stop); <-sampled })
		defer stopSampling()
		go func() { // the cluster controller's queue, 4 times a second
			defer close(sampled)
			for {
				select {
				case <-stop:
					return
				case <-time.After(250 * time.Millisecond):
				}
				if d := queueDepth("cluster"); d >= 0 {
					depthMu.Lock()
					maxDepth = max(maxDepth, d)
					depthMu.Unlock()
				}
			}
		}()
		start := time.Now()
		s.create(b, n)
		created := time.Since(start)
		allReady := s.waitSettled(b, n, 20*time.Minute).Sub(start)
		settled := time.Since(start)
		stopSampling()
		ramp := readReconcileStats(b, "cluster")
		time.Sleep(5 * time.Second)
		before, tenantBefore := readReconcileStats(b, "cluster"), s.backend.tenants.Writes(b)
		writes := s.clusterWrites(b, 60*time.Second)
		after, tenantAfter := readReconcileStats(b, "cluster"), s.backend.tenants.Writes(b)
		idleWrites := 0
		for _, w := range writes {
			idleWrites += w
		}
		b.ReportMetric(created.Seconds(), "s-to-create")
		b.ReportMetric(allReady.Seconds(), "s-to-all-ready")
		b.ReportMetric(settled.Seconds(), "s-to-all-settled")
		b.ReportMetric(float64(n)/allReady.Minutes(), "clusters/min")
		b.ReportMetric(ramp.p50*1000, "ms-reconcile-p50")
		b.ReportMetric(ramp.p99*1000, "ms-reconcile-p99")
		b.ReportMetric(after.p99*1000, "ms-reconcile-p99-total")
		b.ReportMetric(ramp.count/float64(n), "reconciles/cluster-to-ready")
		b.ReportMetric(maxDepth, "max-queue-depth")
		b.ReportMetric((after.count-before.count)/float64(n), "idle-reconciles/cluster/min")
		b.ReportMetric(float64(idleWrites), "idle-cluster-writes/min")
		b.ReportMetric(float64(tenantAfter-tenantBefore), "idle-tenant-writes/min")
		b.ReportMetric(baseRSS, "MiB-rss-empty")
		b.ReportMetric(procStatus(b, "VmRSS"), "MiB-rss")
		b.ReportMetric(procStatus(b, "VmHWM"), "MiB-rss-peak")
		b.ReportMetric(heapMiB(), "MiB-heap")
	}
}

// queueDepth is the current depth of a controller's work queue (-1: not
// known yet).
func queueDepth(controller string) float64 {
	families, err := crmetrics.Registry.Gather()
	if err != nil {
		return -1
	}
	for _, f := range families {
		if f.GetName() != "workqueue_depth" {
			continue
		}
		for _, m := range f.GetMetric() {
			if label(m, "name") == controller {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}
