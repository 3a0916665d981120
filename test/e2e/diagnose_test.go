package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/manager"
)

// diagnoseOnFailure registers a cleanup that, when the test failed, logs
// what a reader of CI output needs to tell why: the cluster's conditions
// and pools, its machines, the latest events of both, and the tenant's
// nodes. Register it after the cleanup that deletes the cluster (cleanups
// run last-in first-out), so it sees the cluster as the test left it.
func diagnoseOnFailure(t testing.TB, name string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		t.Logf("diagnosis of cluster %s at the failure:\n%s", name, diagnose(name))
	})
}

func diagnose(name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var b strings.Builder
	cfg, err := clientcmd.BuildConfigFromFlags("", env.kubeconfig())
	if err != nil {
		return err.Error()
	}
	mc, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		return err.Error()
	}
	cl := &lotsev1.Cluster{}
	if err := mc.Get(ctx, client.ObjectKey{Namespace: "default", Name: name}, cl); err != nil {
		fmt.Fprintf(&b, "cluster: %v\n", err)
	} else {
		fmt.Fprintf(&b, "cluster: phase %s, generation %d observed %d\n", cl.Status.Phase, cl.Generation, cl.Status.ObservedGeneration)
		for _, c := range cl.Status.Conditions {
			fmt.Fprintf(&b, "  %s=%s %s (%s): %s\n", c.Type, c.Status, c.Reason, c.LastTransitionTime.Format(time.TimeOnly), c.Message)
		}
		for _, w := range cl.Status.Workers {
			fmt.Fprintf(&b, "  pool %s: desired %d, ready %d, %s\n", w.Name, w.Desired, w.Ready, w.Message)
		}
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	if events, err := cs.EventsV1().Events("default").List(ctx, metav1.ListOptions{}); err == nil {
		items := events.Items
		sort.Slice(items, func(i, j int) bool {
			return eventTime(items[i].EventTime.Time, items[i].DeprecatedLastTimestamp.Time).Before(eventTime(items[j].EventTime.Time, items[j].DeprecatedLastTimestamp.Time))
		})
		var lines []string
		for _, e := range items {
			if e.Regarding.Name == name || strings.HasPrefix(e.Regarding.Name, name+"-") {
				when := eventTime(e.EventTime.Time, e.DeprecatedLastTimestamp.Time)
				lines = append(lines, fmt.Sprintf("event %s %s/%s %s: %s", when.Format(time.TimeOnly), e.Regarding.Kind, e.Regarding.Name, e.Reason, e.Note))
			}
		}
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		for _, l := range lines {
			b.WriteString(l + "\n")
		}
	}
	if data, err := os.ReadFile(filepath.Join(clusterDir(name), "pki", "admin.kubeconfig")); err == nil {
		if tcfg, err := clientcmd.RESTConfigFromKubeConfig(data); err == nil {
			tcfg.Timeout = 5 * time.Second
			nodes, err := kubernetes.NewForConfigOrDie(tcfg).CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			if err != nil {
				fmt.Fprintf(&b, "tenant nodes: %v\n", err)
			} else {
				for _, n := range nodes.Items {
					fmt.Fprintf(&b, "node %s: %s, unschedulable %t, taints %v\n", n.Name, nodeReadiness(&n), n.Spec.Unschedulable, n.Spec.Taints)
				}
			}
		}
	}
	// Machines last: CI shows the end of a long output.
	var mb strings.Builder
	ms := &lotsev1.MachineList{}
	if err := mc.List(ctx, ms, client.InNamespace("default"), client.MatchingLabels{lotsev1.LabelCluster: name}); err == nil {
		for _, m := range ms.Items {
			deleting := ""
			if !m.DeletionTimestamp.IsZero() {
				deleting = " deleting since " + m.DeletionTimestamp.Format(time.TimeOnly)
			}
			fmt.Fprintf(&mb, "machine %s: phase %s%s\n", m.Name, m.Status.Phase, deleting)
			healthy := m.Status.Phase == lotsev1.MachineRunning && meta.IsStatusConditionTrue(m.Status.Conditions, "NodeReady")
			for _, c := range m.Status.Conditions {
				if c.Status != metav1.ConditionTrue || c.Type != lotsev1.ConditionReady {
					fmt.Fprintf(&mb, "  %s=%s %s (%s): %s\n", c.Type, c.Status, c.Reason, c.LastTransitionTime.Format(time.TimeOnly), c.Message)
				}
			}
			if !healthy {
				// What the machine's own processes said last tells why a
				// node does not come (back).
				for _, proc := range []string{"containerd", "kubelet"} {
					fmt.Fprintf(&mb, "  %s log:\n%s", proc, tail(filepath.Join(clusterDir(name), "machines", m.Name, "logs", proc+".log"), 8, "    "))
				}
			}
		}
	}
	return b.String() + mb.String()
}

func eventTime(eventTime, lastTimestamp time.Time) time.Time {
	if !eventTime.IsZero() {
		return eventTime
	}
	return lastTimestamp
}

func nodeReadiness(n *corev1.Node) string {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return fmt.Sprintf("Ready=%s since %s", c.Status, c.LastTransitionTime.Format(time.TimeOnly))
		}
	}
	return "no Ready condition"
}

// tail returns the last n lines of a file, each indented.
func tail(path string, n int, indent string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return indent + err.Error() + "\n"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var b strings.Builder
	for _, l := range lines {
		if len(l) > 400 {
			l = l[:400] + "..."
		}
		b.WriteString(indent + l + "\n")
	}
	return b.String()
}
