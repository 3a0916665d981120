// Package quota counts what a project's clusters use and decides whether a
// new or changed cluster fits the project's quota. The project controller
// reports the counts; the admission webhook (Admitter) refuses what does
// not fit, naming the quota.
package quota

import (
	"fmt"
	"sort"
	"strings"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// Cost is what one cluster counts against its project's quota.
func Cost(c *lotsev1.Cluster) lotsev1.ProjectUsage {
	u := lotsev1.ProjectUsage{Clusters: 1, ControlPlaneReplicas: 1}
	if c.Spec.ControlPlane.HighAvailability {
		u.ControlPlaneReplicas = 3
	}
	for _, p := range c.Spec.Workers {
		// A pool may grow to its maximum (autoscaling) or, with a
		// minimum above it, is held at its minimum.
		u.Nodes += max(p.Maximum, p.Minimum)
	}
	return u
}

// Add returns a + b.
func Add(a, b lotsev1.ProjectUsage) lotsev1.ProjectUsage {
	return lotsev1.ProjectUsage{
		Clusters:             a.Clusters + b.Clusters,
		Nodes:                a.Nodes + b.Nodes,
		ControlPlaneReplicas: a.ControlPlaneReplicas + b.ControlPlaneReplicas,
	}
}

// Usage sums the cost of clusters.
func Usage(clusters []lotsev1.Cluster) lotsev1.ProjectUsage {
	var u lotsev1.ProjectUsage
	for i := range clusters {
		u = Add(u, Cost(&clusters[i]))
	}
	return u
}

// Excess names every limit of q that u goes beyond, as
// "spec.quota.clusters: 3 used of 2"; empty when u fits (or q is nil).
func Excess(q *lotsev1.ProjectQuota, u lotsev1.ProjectUsage) []string {
	if q == nil {
		return nil
	}
	var out []string
	check := func(field string, limit *int32, used int32) {
		if limit != nil && used > *limit {
			out = append(out, fmt.Sprintf("spec.quota.%s: %d used of %d", field, used, *limit))
		}
	}
	check("clusters", q.Clusters, u.Clusters)
	check("nodes", q.Nodes, u.Nodes)
	check("controlPlaneReplicas", q.ControlPlaneReplicas, u.ControlPlaneReplicas)
	return out
}

// grows reports whether after uses more than before of a limit q sets.
func grows(q *lotsev1.ProjectQuota, before, after lotsev1.ProjectUsage) bool {
	if q == nil {
		return false
	}
	return (q.Clusters != nil && after.Clusters > before.Clusters) ||
		(q.Nodes != nil && after.Nodes > before.Nodes) ||
		(q.ControlPlaneReplicas != nil && after.ControlPlaneReplicas > before.ControlPlaneReplicas)
}

// Decide says whether a cluster whose cost goes from before (zero for a
// create) to after fits project p, whose other clusters use others (with
// their names, for the message). It returns "" to admit, else the reason.
// A change that uses no more of any limited resource is always admitted,
// so a project above a quota lowered under it can still shrink or be
// changed in other ways.
func Decide(p *lotsev1.Project, cluster string, before, after, others lotsev1.ProjectUsage, otherNames []string) string {
	if !grows(p.Spec.Quota, before, after) {
		return ""
	}
	excess := Excess(p.Spec.Quota, Add(others, after))
	if len(excess) == 0 {
		return ""
	}
	names := append([]string(nil), otherNames...)
	sort.Strings(names)
	have := "no other clusters"
	if len(names) > 0 {
		have = fmt.Sprintf("its other clusters: %s", strings.Join(names, ", "))
	}
	return fmt.Sprintf("cluster %s does not fit the quota of project %s (%s; %s): make it smaller, delete a cluster, or ask the provider to raise the project's quota",
		cluster, p.Name, strings.Join(excess, ", "), have)
}
