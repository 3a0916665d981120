// Package placement decides where a fleet's resource goes: which members a
// policy's cluster affinity selects, and how a workload's replicas are
// shared among them (duplicated, divided by static or dynamic weight, or
// aggregated on as few members as possible). It is pure: the propagation
// engine feeds it the members it may schedule on.
package placement

import (
	"fmt"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	policyv1 "github.com/lotse/lotse/api/policy/v1alpha1"
)

// Member is what placement knows of a fleet member.
type Member struct {
	Name                   string
	Labels                 map[string]string
	Region, Zone, Provider string
	// Free is the member's room (allocatable minus requests); nil when
	// unknown.
	Free corev1.ResourceList
	// Available is how many replicas of the workload the member holds:
	// those it runs and those its room fits (dynamic weights,
	// aggregation, spread ranking); negative when unknown.
	Available int64
	// Holds: the member carries the resource already. Spread constraints
	// keep such members before roomier ones, so a placement does not
	// move back and forth as room changes.
	Holds bool
}

// Select returns the members an affinity selects, sorted by name; a nil
// affinity selects every member.
func Select(members []Member, aff *policyv1.ClusterAffinity) ([]Member, error) {
	out := []Member{}
	for _, m := range members {
		ok, err := Matches(m, aff)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Matches reports whether an affinity selects a member: every part that is
// set must hold, and exclude wins.
func Matches(m Member, aff *policyv1.ClusterAffinity) (bool, error) {
	if aff == nil {
		return true, nil
	}
	if slices.Contains(aff.Exclude, m.Name) {
		return false, nil
	}
	if len(aff.ClusterNames) > 0 && !slices.Contains(aff.ClusterNames, m.Name) {
		return false, nil
	}
	if aff.LabelSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(aff.LabelSelector)
		if err != nil {
			return false, fmt.Errorf("placement.clusterAffinity.labelSelector: %w", err)
		}
		if !sel.Matches(labels.Set(m.Labels)) {
			return false, nil
		}
	}
	if aff.FieldSelector != nil {
		for _, req := range aff.FieldSelector.MatchExpressions {
			ok, err := fieldMatches(m, req)
			if err != nil {
				return false, err
			}
			if !ok {
				return false, nil
			}
		}
	}
	return true, nil
}

func fieldMatches(m Member, req policyv1.FieldSelectorRequirement) (bool, error) {
	var value string
	switch req.Key {
	case "region":
		value = m.Region
	case "zone":
		value = m.Zone
	case "provider":
		value = m.Provider
	default:
		return false, fmt.Errorf("placement.clusterAffinity.fieldSelector: unknown key %q (provider, region or zone)", req.Key)
	}
	switch req.Operator {
	case "In":
		return value != "" && slices.Contains(req.Values, value), nil
	case "NotIn":
		return !slices.Contains(req.Values, value), nil
	case "Exists":
		return value != "", nil
	case "DoesNotExist":
		return value == "", nil
	}
	return false, fmt.Errorf("placement.clusterAffinity.fieldSelector: unknown operator %q (In, NotIn, Exists or DoesNotExist)", req.Operator)
}

// Divide shares total replicas among the selected members (sorted by
// name). Duplicated (or no strategy) gives each the total. Members that
// get no replicas of a divided workload are left out of the result.
func Divide(total int32, members []Member, strategy *policyv1.ReplicaSchedulingStrategy) (map[string]int32, error) {
	out := map[string]int32{}
	if strategy == nil || strategy.ReplicaSchedulingType == policyv1.ReplicaSchedulingDuplicated {
		for _, m := range members {
			out[m.Name] = total
		}
		return out, nil
	}
	if len(members) == 0 {
		return out, nil
	}
	if strategy.ReplicaDivisionPreference == policyv1.DivisionAggregated {
		return aggregate(total, members), nil
	}
	weights := make([]int64, len(members))
	switch {
	case strategy.WeightPreference != nil && strategy.WeightPreference.DynamicWeight == policyv1.DynamicWeightAvailableReplicas && knownCapacity(members):
		for i, m := range members {
			weights[i] = max(m.Available, 0)
		}
	case strategy.WeightPreference != nil && len(strategy.WeightPreference.StaticWeightList) > 0:
		for i, m := range members {
			for _, w := range strategy.WeightPreference.StaticWeightList {
				ok, err := Matches(m, &w.TargetCluster)
				if err != nil {
					return nil, err
				}
				if ok {
					weights[i] = w.Weight
					break
				}
			}
		}
	default:
		for i := range weights {
			weights[i] = 1
		}
	}
	var sum int64
	for i, w := range weights {
		// Bounded so that total*weight cannot overflow (the CRD allows up
		// to 10000; capacities can be large).
		weights[i] = min(w, 1<<20)
		sum += weights[i]
	}
	if sum == 0 {
		return nil, fmt.Errorf("placement.replicaScheduling: the weights of the selected members (%s) sum to 0", names(members))
	}
	// Largest remainder: each member gets the floor of its share, and the
	// replicas left go to the largest remainders (then the higher weight,
	// then the name), so the result is stable and sums to total.
	type share struct {
		i         int
		remainder int64
	}
	shares := make([]share, len(members))
	given := int32(0)
	for i, w := range weights {
		n := int64(total) * w / sum
		out[members[i].Name] = int32(n)
		given += int32(n)
		shares[i] = share{i, int64(total)*w - n*sum}
	}
	sort.SliceStable(shares, func(a, b int) bool {
		if shares[a].remainder != shares[b].remainder {
			return shares[a].remainder > shares[b].remainder
		}
		return weights[shares[a].i] > weights[shares[b].i]
	})
	for k := 0; given < total; k++ {
		s := shares[k%len(shares)]
		if weights[s.i] == 0 {
			continue
		}
		out[members[s.i].Name]++
		given++
	}
	for name, n := range out {
		if n == 0 {
			delete(out, name)
		}
	}
	return out, nil
}

// knownCapacity: every member's room is known and some member has room;
// otherwise dynamic weights fall back to equal ones.
func knownCapacity(members []Member) bool {
	room := false
	for _, m := range members {
		if m.Available < 0 {
			return false
		}
		room = room || m.Available > 0
	}
	return room
}

// aggregate puts the replicas on as few members as possible: the members
// with the most room first; without capacity figures, all on the first.
func aggregate(total int32, members []Member) map[string]int32 {
	sorted := slices.Clone(members)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Available > sorted[j].Available })
	out := map[string]int32{}
	left := int64(total)
	for _, m := range sorted {
		if left == 0 {
			break
		}
		n := left
		if m.Available >= 0 && m.Available < n {
			n = m.Available
		}
		if n > 0 {
			out[m.Name] = int32(n)
			left -= n
		}
	}
	if left > 0 { // more than the room there is: the rest on the roomiest
		out[sorted[0].Name] += int32(left)
	}
	return out
}

func names(ms []Member) string {
	s := ""
	for i, m := range ms {
		if i > 0 {
			s += ", "
		}
		s += m.Name
	}
	return s
}
