package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/manager"
	"github.com/lotse/lotse/internal/supervisor"
)

// TestManagerAgainstExistingCluster: `lotse manager --kubeconfig` runs the
// same controllers against any Kubernetes API (the operator shape). Here the
// API is a tenant cluster Lotse created; the manager installs the CRDs
// there and hosts a Cluster created in it. Stopping the manager leaves that
// control plane running; `lotse down` stops it.
func TestManagerAgainstExistingCluster(t *testing.T) {
	const hostName = "mgr-host"
	mustCLI(t, "cluster", "create", hostName, "--wait", "--timeout", scaled(3*time.Minute))
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", hostName, "--wait") })
	kubeconfig := filepath.Join(t.TempDir(), "host.kubeconfig")
	mustCLI(t, "cluster", "kubeconfig", hostName, "--output-file", kubeconfig)

	stateDir := t.TempDir()
	cmd := exec.Command(env.binary, "manager", "--kubeconfig", kubeconfig, "--state-dir", stateDir)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	owner := supervisor.OwnerID(stateDir)
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
		}
		if b, err := exec.Command(env.binary, "down", "--state-dir", stateDir).CombinedOutput(); err != nil {
			t.Errorf("lotse down: %v: %s", err, b)
		}
		if left := supervisor.FindProcesses(owner); len(left) > 0 {
			t.Errorf("processes left: %+v", left)
		}
	})

	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	waitFor(t, 2*time.Minute, "the manager to install its CRDs", func() (bool, error) {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		return hc.Get(ctx, client.ObjectKey{Name: "clusters.lotse.dev"}, crd) == nil, nil
	})
	// A client made after the CRD exists discovers the new type.
	nested := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "nested", Namespace: "default"}}
	waitFor(t, time.Minute, "the Cluster type to be served", func() (bool, error) {
		c, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
		if err != nil {
			return false, err
		}
		if err := c.Create(ctx, nested.DeepCopy()); err != nil {
			return false, err
		}
		hc = c
		return true, nil
	})
	waitFor(t, 3*time.Minute, "the nested cluster Ready", func() (bool, error) {
		cur := &lotsev1.Cluster{}
		if err := hc.Get(ctx, client.ObjectKeyFromObject(nested), cur); err != nil {
			return false, err
		}
		for _, c := range cur.Status.Conditions {
			if c.Type == lotsev1.ConditionReady && c.Status == metav1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	procs := 0
	for _, f := range supervisor.FindProcesses(owner) {
		if strings.HasPrefix(f.Name, "clusters/default/nested/") {
			procs++
		}
	}
	// etcd, kube-apiserver, konnectivity-server, controller-manager, scheduler.
	if procs != 5 {
		t.Errorf("nested cluster has %d processes under the manager's state directory, want 5", procs)
	}

	// Stopping the manager leaves the control plane it hosts running.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(time.Minute):
		t.Fatalf("manager did not stop on SIGTERM:\n%s", out.String())
	}
	if n := len(supervisor.FindProcesses(owner)); n != procs {
		t.Errorf("%d processes after the manager stopped, want the %d it hosted", n, procs)
	}
}
