package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// TestHibernation: a cluster with a Deployment writing to a node-local
// PVC hibernates (nothing of it runs, its API answers at once with a
// message) and wakes with its objects and the volume's data intact; a
// schedule then puts it to sleep and wakes it.
func TestHibernation(t *testing.T) {
	const name = "sleepy"
	parallel(t)
	mc := mgmtClient(t)
	ctx := context.Background()
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	c.Spec.Workers = []lotsev1.WorkerPool{{Name: "w", Minimum: 1, Maximum: 1, MaxSurge: 1}}
	if err := mc.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", name, "--wait", "--timeout", "5m") })
	diagnoseOnFailure(t, name)
	waitClusterReady(t, mc, name, 15*time.Minute)
	cs := tenantClient(t, name)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	mustCLI(t, "cluster", "kubeconfig", name, "--output-file", kubeconfig)
	kubectl := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, kubectlPath(t), append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
		return string(out), err
	}

	// A Deployment whose pod keeps a file on a node-local volume.
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "state", Namespace: "default"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("16Mi")}},
		},
	}
	if _, err := cs.CoreV1().PersistentVolumeClaims("default").Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d := echoDeployment("default", "keeper")
	d.Spec.Replicas = ptr.To[int32](1)
	d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
	d.Spec.Template.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "state", MountPath: "/state"}}
	d.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: "state", VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "state"}}}}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := readyPodOf(t, cs, "default", "keeper")
	if out, err := kubectlExec(t, kubeconfig, pod, "/echo", "write", "/state/note", "written before the sleep"); err != nil {
		t.Fatalf("write: %v\n%s", err, out)
	}

	hibernateAndWake := func(t *testing.T, sleep, wake func()) {
		t.Helper()
		since := time.Now()
		sleep()
		waitFor(t, 5*time.Minute, name+" Hibernated", func() (bool, error) {
			got := getCluster(t, mc, name)
			return got.Status.Phase == lotsev1.PhaseHibernated && got.Status.Hibernation != nil && got.Status.Hibernation.Hibernated, nil
		})
		t.Logf("hibernated in %s", time.Since(since).Round(100*time.Millisecond))
		if left := clusterProcesses(name); len(left) > 0 {
			t.Errorf("processes of the hibernated cluster still run: %+v", left)
		}
		start := time.Now()
		out, err := kubectl("get", "pods")
		if err == nil || !strings.Contains(out, "is hibernated") || time.Since(start) > 10*time.Second {
			t.Errorf("kubectl against the hibernated cluster (%s): %v\n%s", time.Since(start).Round(time.Millisecond), err, out)
		}
		since = time.Now()
		wake()
		waitClusterReady(t, mc, name, 5*time.Minute)
		t.Logf("woken in %s", time.Since(since).Round(100*time.Millisecond))
		got := getCluster(t, mc, name)
		if got.Status.Hibernation != nil && got.Status.Hibernation.Since != nil {
			t.Errorf("status.hibernation after waking: %+v", got.Status.Hibernation)
		}
		pod := readyPodOf(t, cs, "default", "keeper")
		if out, err := kubectlExec(t, kubeconfig, pod, "/echo", "read", "/state/note"); err != nil || out != "written before the sleep" {
			t.Errorf("the volume after waking: %q, %v", out, err)
		}
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes.Items {
			if n.Spec.Unschedulable {
				t.Errorf("node %s still cordoned after waking", n.Name)
			}
		}
	}

	if !t.Run("by hand", func(t *testing.T) {
		hibernateAndWake(t,
			func() { mustCLI(t, "cluster", "hibernate", name) },
			func() { mustCLI(t, "cluster", "wake", name) })
	}) {
		return
	}

	t.Run("on a schedule", func(t *testing.T) {
		// Asleep from the next minute, awake two minutes later (room for
		// going to sleep on a loaded machine before the end is due).
		now := time.Now().UTC()
		startAt, endAt := now.Add(time.Minute), now.Add(3*time.Minute)
		if now.Second() > 45 { // leave the reconciler time to see the schedule first
			startAt, endAt = startAt.Add(time.Minute), endAt.Add(time.Minute)
		}
		schedule := lotsev1.HibernationSchedule{
			Start: fmt.Sprintf("%d %d * * *", startAt.Minute(), startAt.Hour()),
			End:   fmt.Sprintf("%d %d * * *", endAt.Minute(), endAt.Hour()),
		}
		hibernateAndWake(t,
			func() {
				updateCluster(t, mc, name, func(c *lotsev1.Cluster) {
					c.Spec.Hibernation = &lotsev1.HibernationSpec{Schedules: []lotsev1.HibernationSchedule{schedule}}
				})
			},
			func() {}) // the end of the schedule wakes it
	})
}
