package seed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/utils/ptr"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/dataswap"
	"github.com/lotse/lotse/internal/images"
)

// A restore on a seed replaces the data on every etcd member's volume.
// The manager restores the snapshot into one data directory per member
// here (etcdutl, with the members' names and peer URLs in the seed), then,
// with the control plane scaled to zero, streams each directory into a
// pod that mounts the member's volume and swaps it in (lotse data-swap,
// see internal/dataswap). The ConfigMap lotse-restore in the control
// plane's namespace says how far a restore got: while it says "swapping",
// an abandoned restore is rolled back (every member gets its old data
// back); once it says "committing" the restored data is kept on every
// member. The next Restore or the next start of etcd finishes either.

const (
	restoreMarkerName = "lotse-restore"
	restoreStepKey    = "step"
	restoreSwapping   = "swapping"
	restoreCommitting = "committing"
	dataSwapComponent = "etcd-data-swap"
	dataSwapContainer = "data-swap"
	etcdVolumeDir     = "/var/lib/etcd"
	etcdDataName      = "data"
	etcdVolumeClaim   = "data"
)

// Restore replaces the control plane's etcd data with a snapshot and
// leaves it scaled to zero; the next Tasks run starts it on the restored
// data. What can refuse the snapshot (a key clash, etcdutl failing on the
// file) runs before anything stops and returns ErrRestoreRefused.
func (b *Backend) Restore(ctx context.Context, spec controlplane.Spec, in controlplane.RestoreInput) error {
	defer b.lock(spec.Key)()
	l, err := b.ensureLayout(ctx, spec)
	if err != nil {
		return err
	}
	sc, err := b.client(ctx, l.Seed)
	if err != nil {
		return err
	}
	if l.etcdGrowing() {
		return fmt.Errorf("%w: etcd members are still being added (the cluster is becoming highly available); restore once that is done", controlplane.ErrRestoreRefused)
	}
	if err := b.settleRestore(ctx, sc, spec, l); err != nil {
		return err
	}
	p := b.PKI(spec.Key)
	if err := controlplane.CheckRestoreKeys(p, spec.EncryptionProvider, in.Credentials); err != nil {
		return err
	}

	r := render{spec: spec, layout: l}
	members, _, _ := r.replicas()
	staging, err := os.MkdirTemp(b.Dir(spec.Key), "restore-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(staging)
	var etcdMembers []controlplane.EtcdMember
	for i := 0; i < int(members); i++ {
		etcdMembers = append(etcdMembers, controlplane.EtcdMember{Name: memberName(i),
			PeerURL: fmt.Sprintf("https://%s:%d", l.etcdHost(i), etcdPeerPort), DataDir: filepath.Join(staging, memberName(i))})
	}
	if err := controlplane.RestoreEtcdData(ctx, spec.Binaries.Path("etcdutl"), in.Snapshot, l.Namespace, etcdMembers); err != nil {
		return err
	}
	image, err := b.dataSwapImage(ctx, l.Seed)
	if err != nil {
		return err
	}

	// From here the cluster's data changes.
	if err := sc.stopAll(ctx, l.Namespace); err != nil {
		return err
	}
	if err := p.MergeEncryptionKeys(spec.EncryptionProvider, in.Credentials, true); err != nil {
		return err
	}
	if err := b.saveState(ctx, sc, spec.Key, l); err != nil {
		return err
	}
	// A new cluster has no volumes yet: they are made as the StatefulSet
	// would make them, which then adopts them.
	if err := sc.ensureVolumes(ctx, r, members); err != nil {
		return err
	}
	if err := sc.setRestoreStep(ctx, l.Namespace, restoreSwapping); err != nil {
		return err
	}
	for i := 0; i < int(members); i++ {
		pr, pw := io.Pipe()
		go func(dir string) { pw.CloseWithError(dataswap.Send(pw, dir)) }(filepath.Join(staging, memberName(i)))
		err := sc.runDataSwap(ctx, l.Namespace, i, image, "receive", pr)
		pr.Close()
		if err != nil {
			return fmt.Errorf("etcd member %d on seed %s: %w", i, l.Seed, err)
		}
	}
	// Every member has the restored data: it stays.
	if err := sc.setRestoreStep(ctx, l.Namespace, restoreCommitting); err != nil {
		return err
	}
	return b.finishRestore(ctx, sc, l, members, image, "commit")
}

// memberName is etcd member i's name (its pod's).
func memberName(i int) string { return fmt.Sprintf("%s-%d", etcdName, i) }

// volumeClaimName is member i's volume claim, named as a StatefulSet names
// those it makes from its template.
func volumeClaimName(i int) string { return etcdVolumeClaim + "-" + memberName(i) }

// settleRestore finishes a restore that stopped half way: one that had
// swapped every member is committed, any other rolled back. etcd must not
// run while it does.
func (b *Backend) settleRestore(ctx context.Context, sc *seedClient, spec controlplane.Spec, l Layout) error {
	step, err := sc.restoreStep(ctx, l.Namespace)
	if err != nil || step == "" {
		return err
	}
	image, err := b.dataSwapImage(ctx, l.Seed)
	if err != nil {
		return err
	}
	if err := sc.stopAll(ctx, l.Namespace); err != nil {
		return err
	}
	members, _, _ := render{spec: spec, layout: l}.replicas()
	action := "rollback"
	if step == restoreCommitting {
		action = "commit"
	}
	return b.finishRestore(ctx, sc, l, members, image, action)
}

// finishRestore commits or rolls back every member's swap, then drops the
// marker.
func (b *Backend) finishRestore(ctx context.Context, sc *seedClient, l Layout, members int32, image swapImage, action string) error {
	errs := make([]error, members)
	var wg sync.WaitGroup
	for i := 0; i < int(members); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sc.runDataSwap(ctx, l.Namespace, i, image, action, nil); err != nil {
				errs[i] = fmt.Errorf("etcd member %d on seed %s: %s: %w", i, l.Seed, action, err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	err := sc.kube.CoreV1().ConfigMaps(l.Namespace).Delete(ctx, restoreMarkerName, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

func (sc *seedClient) restoreStep(ctx context.Context, namespace string) (string, error) {
	cm, err := sc.kube.CoreV1().ConfigMaps(namespace).Get(ctx, restoreMarkerName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", nil
	} else if err != nil {
		return "", err
	}
	return cm.Data[restoreStepKey], nil
}

func (sc *seedClient) setRestoreStep(ctx context.Context, namespace, step string) error {
	return sc.apply(ctx, restoreMarker(namespace, step))
}

// restoreMarker says how far a restore got.
func restoreMarker(namespace, step string) *corev1.ConfigMap {
	return &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: meta(namespace, restoreMarkerName, "restore"), Data: map[string]string{restoreStepKey: step}}
}

// scaleToZero scales the control plane's workloads to zero, clients
// first, then what they depend on. Their volumes stay.
func (sc *seedClient) scaleToZero(ctx context.Context, namespace string) error {
	scale := []byte(`{"spec":{"replicas":0}}`)
	for _, c := range []string{schedulerName, controllerManagerName, apiServerName} {
		_, err := sc.kube.AppsV1().Deployments(namespace).Patch(ctx, c, types.MergePatchType, scale, metav1.PatchOptions{FieldManager: fieldManager})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	_, err := sc.kube.AppsV1().StatefulSets(namespace).Patch(ctx, etcdName, types.MergePatchType, scale, metav1.PatchOptions{FieldManager: fieldManager})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// stopAll scales the control plane to zero and waits until etcd's pods
// are gone: its volumes are free for the data-swap pods.
func (sc *seedClient) stopAll(ctx context.Context, namespace string) error {
	if err := sc.scaleToZero(ctx, namespace); err != nil {
		return err
	}
	return sc.waitNoPods(ctx, namespace, etcdName)
}

// waitNoPods waits until no pod of component is left (its volumes are
// free).
func (sc *seedClient) waitNoPods(ctx context.Context, namespace, component string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for {
		pods, err := sc.kube.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelComponent + "=" + component})
		if err == nil && len(pods.Items) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the %s pods in %s to stop: %w", component, namespace, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// ensureVolumes creates the members' volume claims the StatefulSet has
// not made yet, by its template.
func (sc *seedClient) ensureVolumes(ctx context.Context, r render, members int32) error {
	if err := sc.apply(ctx, r.objects(stageBase)...); err != nil {
		return err
	}
	tmpl := r.etcd(members).Spec.VolumeClaimTemplates[0]
	for i := 0; i < int(members); i++ {
		pvc := tmpl.DeepCopy()
		pvc.Name = volumeClaimName(i)
		pvc.Namespace = r.ns()
		pvc.Labels = labels(etcdName)
		_, err := sc.kube.CoreV1().PersistentVolumeClaims(r.ns()).Create(ctx, pvc, metav1.CreateOptions{FieldManager: fieldManager})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return nil
}

// swapImage is what the data-swap pods run.
type swapImage struct {
	ref string
	// command, if set, is lotse's path in an image that holds more.
	command     []string
	pullSecrets []corev1.LocalObjectReference
}

// dataSwapImage is the image (and its command) of the data-swap pods: the
// control-plane image when the manager runs one (it holds lotse), else
// lotse alone, loaded into the seed.
func (b *Backend) dataSwapImage(ctx context.Context, seed string) (swapImage, error) {
	pullSecrets := ImageRefs{PullCredentials: b.ImagePullCredentials}.imagePullSecrets()
	if b.ControlPlaneImage != "" {
		return swapImage{ref: b.ControlPlaneImage, command: []string{images.ManagerBinary}, pullSecrets: pullSecrets}, nil
	}
	// Tagged by its content: a rebuilt lotse is never mistaken for the
	// one a seed's nodes have.
	sum, err := images.FileSHA256(b.LotseBinary)
	if err != nil {
		return swapImage{}, err
	}
	tag := sum[:16]
	img := images.FromBinary(images.DataSwapName, tag, b.LotseBinary, nil)
	pulled, err := b.Images.Load(ctx, seed, []images.Image{img})
	if err != nil {
		return swapImage{}, fmt.Errorf("loading the data-swap image into seed %s: %w", seed, err)
	}
	ref := img.Ref()
	if p := pulled[ref]; p != "" {
		ref = p
	}
	return swapImage{ref: ref, pullSecrets: pullSecrets}, nil
}

// dataSwapPod mounts member i's volume and runs one step of the swap.
func dataSwapPod(namespace string, member int, image swapImage, action string) *corev1.Pod {
	receive := action == "receive"
	return &corev1.Pod{
		ObjectMeta: meta(namespace, fmt.Sprintf("%s-%d", dataSwapComponent, member), dataSwapComponent),
		Spec: corev1.PodSpec{
			RestartPolicy:    corev1.RestartPolicyNever,
			ImagePullSecrets: image.pullSecrets,
			Containers: []corev1.Container{{
				Name: dataSwapContainer, Image: image.ref, Command: image.command, ImagePullPolicy: corev1.PullIfNotPresent,
				Args:  []string{"data-swap", action, "--dir=" + etcdVolumeDir, "--name=" + etcdDataName},
				Stdin: receive, StdinOnce: receive,
				SecurityContext:          containerSecurity(),
				Resources:                resources("10m", "32Mi"),
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				VolumeMounts:             []corev1.VolumeMount{{Name: "data", MountPath: etcdVolumeDir}},
			}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{
				ClaimName: volumeClaimName(member)}}}},
			SecurityContext:               podSecurity(),
			AutomountServiceAccountToken:  ptr.To(false),
			EnableServiceLinks:            ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](5),
		},
	}
}

// runDataSwap runs one step on member i's volume in a pod, with data (if
// any) on its standard input, and waits until it has ended well.
func (sc *seedClient) runDataSwap(ctx context.Context, namespace string, member int, image swapImage, action string, data io.Reader) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	pods := sc.kube.CoreV1().Pods(namespace)
	pod := dataSwapPod(namespace, member, image, action)
	// A pod of an earlier try goes first.
	if err := sc.deletePodAndWait(ctx, namespace, pod.Name); err != nil {
		return err
	}
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{FieldManager: fieldManager}); err != nil {
		return err
	}
	defer func() {
		_ = pods.Delete(context.WithoutCancel(ctx), pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	}()
	if data != nil {
		if err := sc.waitPod(ctx, namespace, pod.Name, func(p *corev1.Pod) bool { return p.Status.Phase != corev1.PodPending }); err != nil {
			return err
		}
		if err := sc.attach(ctx, namespace, pod.Name, data); err != nil {
			return fmt.Errorf("sending the data: %w", err)
		}
	}
	var ended *corev1.Pod
	if err := sc.waitPod(ctx, namespace, pod.Name, func(p *corev1.Pod) bool {
		ended = p
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	}); err != nil {
		return err
	}
	if ended.Status.Phase == corev1.PodFailed {
		msg := PodTrouble(*ended)
		for _, cs := range ended.Status.ContainerStatuses {
			if t := cs.State.Terminated; t != nil && t.Message != "" {
				msg = strings.TrimSpace(t.Message)
			}
		}
		return fmt.Errorf("lotse data-swap %s failed: %s", action, msg)
	}
	return nil
}

// attach streams data to the pod's standard input; it returns when the
// pod's process has ended.
func (sc *seedClient) attach(ctx context.Context, namespace, pod string, data io.Reader) error {
	req := sc.kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("attach").
		VersionedParams(&corev1.PodAttachOptions{Container: dataSwapContainer, Stdin: true, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	exec, err := remotecommand.NewSPDYExecutor(sc.cfg, "POST", req.URL())
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if err := exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: data, Stdout: &out, Stderr: &out}); err != nil {
		return fmt.Errorf("%v: %s", err, truncate(strings.TrimSpace(out.String()), 400))
	}
	return nil
}

func (sc *seedClient) waitPod(ctx context.Context, namespace, name string, done func(*corev1.Pod) bool) error {
	for {
		p, err := sc.kube.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err == nil && done(p) {
			return nil
		}
		select {
		case <-ctx.Done():
			why := ""
			if p != nil {
				why = PodTrouble(*p)
			}
			return fmt.Errorf("pod %s/%s: %w %s", namespace, name, ctx.Err(), why)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (sc *seedClient) deletePodAndWait(ctx context.Context, namespace, name string) error {
	pods := sc.kube.CoreV1().Pods(namespace)
	if err := pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	for {
		if _, err := pods.Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pod %s/%s of an earlier try is still there: %w", namespace, name, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}
