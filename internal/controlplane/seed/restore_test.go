package seed

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/lotse/lotse/internal/controlplane"
)

// TestDataSwapPod: each data-swap pod mounts the volume the StatefulSet
// gives that member, where etcd keeps its data, and runs unprivileged.
func TestDataSwapPod(t *testing.T) {
	r, objs := rendered(t, controlplane.Spec{Key: "cluster/default/c1", Name: "c1", HighAvailability: true})
	sts, ok := find[*appsv1.StatefulSet](objs, etcdName)
	if !ok {
		t.Fatal("no etcd StatefulSet")
	}
	etcd := sts.Spec.Template.Spec.Containers[0]
	var dataDir, etcdMount string
	for _, m := range etcd.VolumeMounts {
		if m.Name == sts.Spec.VolumeClaimTemplates[0].Name {
			etcdMount = m.MountPath
		}
	}
	for _, a := range etcd.Args {
		if v, ok := strings.CutPrefix(a, "--data-dir="); ok {
			dataDir = v
		}
	}
	for _, action := range []string{"receive", "commit", "rollback"} {
		for i := 0; i < int(*sts.Spec.Replicas); i++ {
			pull := []corev1.LocalObjectReference{{Name: imagePullName}}
			p := dataSwapPod(r.ns(), i, swapImage{ref: "img", pullSecrets: pull}, action)
			if c := p.Spec.Containers[0]; c.Image != "img" || !slices.Equal(p.Spec.ImagePullSecrets, pull) {
				t.Errorf("%s: image %s pulled with %v", action, c.Image, p.Spec.ImagePullSecrets)
			}
			// A StatefulSet names a member's claim <template>-<set>-<ordinal>.
			want := sts.Spec.VolumeClaimTemplates[0].Name + "-" + sts.Name + "-" + string(rune('0'+i))
			if got := p.Spec.Volumes[0].PersistentVolumeClaim.ClaimName; got != want {
				t.Errorf("%s member %d: claim %s, want %s", action, i, got, want)
			}
			c := p.Spec.Containers[0]
			if c.VolumeMounts[0].MountPath != etcdMount {
				t.Errorf("mounted at %s, etcd at %s", c.VolumeMounts[0].MountPath, etcdMount)
			}
			if !slices.Contains(c.Args, "--dir="+etcdVolumeDir) || !slices.Contains(c.Args, "--name="+etcdDataName) || etcdVolumeDir+"/"+etcdDataName != dataDir {
				t.Errorf("args %v do not swap etcd's --data-dir=%s", c.Args, dataDir)
			}
			if c.Stdin != (action == "receive") || c.StdinOnce != c.Stdin {
				t.Errorf("%s: stdin %t", action, c.Stdin)
			}
			if s := p.Spec.SecurityContext; s.RunAsNonRoot == nil || !*s.RunAsNonRoot || *p.Spec.AutomountServiceAccountToken {
				t.Errorf("%s: runs as root or with a token of the seed", action)
			}
			if p.Spec.RestartPolicy != corev1.RestartPolicyNever {
				t.Errorf("%s: restart policy %s", action, p.Spec.RestartPolicy)
			}
		}
	}
}

// TestSettleRestore: a restore that stopped while swapping is rolled back
// on every member, one that stopped while committing is committed, and
// the marker goes; without a marker nothing runs.
func TestSettleRestore(t *testing.T) {
	for _, tc := range []struct {
		step string
		want string // the action every member's pod runs; "" none
	}{
		{"", ""},
		{restoreSwapping, "rollback"},
		{restoreCommitting, "commit"},
	} {
		t.Run("step "+tc.step, func(t *testing.T) {
			spec := controlplane.Spec{Key: "cluster/default/c1", Name: "c1", HighAvailability: true}
			l := Layout{Seed: "s", Namespace: "cp"}
			kube := fake.NewClientset()
			sc := &seedClient{kube: kube}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if tc.step != "" {
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: l.Namespace, Name: restoreMarkerName}, Data: map[string]string{restoreStepKey: tc.step}}
				if _, err := kube.CoreV1().ConfigMaps(l.Namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			// The seed's "kubelet": every data-swap pod ends well.
			var mu sync.Mutex
			ran := map[string]string{}
			done := make(chan struct{})
			go func() {
				defer close(done)
				for ctx.Err() == nil {
					pods, _ := kube.CoreV1().Pods(l.Namespace).List(ctx, metav1.ListOptions{})
					for _, p := range pods.Items {
						if p.Status.Phase == corev1.PodSucceeded {
							continue
						}
						mu.Lock()
						ran[p.Name] = p.Spec.Containers[0].Args[1]
						mu.Unlock()
						p.Status.Phase = corev1.PodSucceeded
						_, _ = kube.CoreV1().Pods(l.Namespace).UpdateStatus(ctx, &p, metav1.UpdateOptions{})
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
			b := &Backend{ControlPlaneImage: "manager:1"}
			if err := b.settleRestore(ctx, sc, spec, l); err != nil {
				t.Fatal(err)
			}
			cancel()
			<-done
			want := map[string]string{}
			if tc.want != "" {
				for i := 0; i < 3; i++ {
					want[dataSwapComponent+"-"+string(rune('0'+i))] = tc.want
				}
			}
			if len(ran) != len(want) {
				t.Errorf("pods run: %v, want %v", ran, want)
			}
			for name, action := range want {
				if ran[name] != action {
					t.Errorf("pod %s ran %q, want %q", name, ran[name], action)
				}
			}
			if _, err := kube.CoreV1().ConfigMaps(l.Namespace).Get(context.Background(), restoreMarkerName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("the marker stayed: %v", err)
			}
		})
	}
}

// TestAppliedKindsKnown: every kind the backend applies has its resource.
func TestAppliedKindsKnown(t *testing.T) {
	_, objs := rendered(t, controlplane.Spec{Key: "cluster/default/c1", Name: "c1", HighAvailability: true})
	objs = append(objs, restoreMarker("ns", restoreSwapping))
	for _, o := range objs {
		kind := o.GetObjectKind().GroupVersionKind().Kind
		if _, ok := resourceOf[kind]; !ok {
			t.Errorf("kind %q is applied but has no resource in resourceOf", kind)
		}
	}
}
