package placement

import (
	"fmt"
	"sort"

	policyv1 "github.com/lotse/lotse/api/policy/v1alpha1"
)

// Spread applies a placement's spread constraints to the members its
// affinity selected (sorted by name) and returns those it keeps, sorted by
// name. Group constraints (region, zone, provider, a label) go first, in
// their order; the cluster constraint last, taking members from the kept
// groups in turn so that the resource stays spread over them.
func Spread(members []Member, constraints []policyv1.SpreadConstraint) ([]Member, error) {
	if len(constraints) == 0 {
		return members, nil
	}
	kept := members
	groups := groupBy(members, func(Member) string { return "all" })
	var byCluster *policyv1.SpreadConstraint
	minGroupsNeeded := int32(0)
	for i := range constraints {
		c := &constraints[i]
		if c.SpreadByField == policyv1.SpreadByCluster {
			byCluster = c
			continue
		}
		what := spreadName(c)
		groups = groupBy(kept, func(m Member) string { return spreadKey(m, c) })
		if int32(len(groups)) < c.MinGroups {
			return nil, fmt.Errorf("placement.spreadConstraints[%d]: the selected members span %d %s group(s), minGroups is %d", i, len(groups), what, c.MinGroups)
		}
		if c.MaxGroups > 0 && int32(len(groups)) > c.MaxGroups {
			groups = groups[:c.MaxGroups]
		}
		minGroupsNeeded = max(minGroupsNeeded, min(c.MinGroups, int32(len(groups))))
		kept = nil
		for _, g := range groups {
			kept = append(kept, g...)
		}
	}
	if byCluster != nil {
		if int32(len(kept)) < byCluster.MinGroups {
			return nil, fmt.Errorf("placement.spreadConstraints: %d member(s) selected and spread, minGroups of the cluster constraint is %d", len(kept), byCluster.MinGroups)
		}
		if byCluster.MaxGroups > 0 && int32(len(kept)) > byCluster.MaxGroups {
			if byCluster.MaxGroups < minGroupsNeeded {
				return nil, fmt.Errorf("placement.spreadConstraints: maxGroups of the cluster constraint (%d) is less than the %d group(s) another constraint needs", byCluster.MaxGroups, minGroupsNeeded)
			}
			// One member of each group in turn, the best ranked first.
			var picked []Member
			for round := 0; int32(len(picked)) < byCluster.MaxGroups; round++ {
				for _, g := range groups {
					if round < len(g) && int32(len(picked)) < byCluster.MaxGroups {
						picked = append(picked, g[round])
					}
				}
			}
			kept = picked
			// The pick follows the last group constraint's groups; an
			// earlier one's minimum must still hold.
			for i := range constraints {
				c := &constraints[i]
				if c.SpreadByField == policyv1.SpreadByCluster || c.MinGroups == 0 {
					continue
				}
				if n := len(groupBy(kept, func(m Member) string { return spreadKey(m, c) })); int32(n) < c.MinGroups {
					return nil, fmt.Errorf("placement.spreadConstraints[%d]: the %d member(s) the cluster constraint allows span %d %s group(s), minGroups is %d",
						i, len(kept), n, spreadName(c), c.MinGroups)
				}
			}
		}
	}
	out := append([]Member(nil), kept...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// groupBy groups members by key (members without one are left out); the
// groups are ranked by how many members already hold the resource, their
// room, their size, then the key; each group's members by holding, room,
// then name.
func groupBy(members []Member, key func(Member) string) [][]Member {
	byKey := map[string][]Member{}
	var keys []string
	for _, m := range members {
		k := key(m)
		if k == "" {
			continue
		}
		if _, ok := byKey[k]; !ok {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], m)
	}
	room, holds := map[string]int64{}, map[string]int{}
	for k, ms := range byKey {
		sort.SliceStable(ms, func(i, j int) bool {
			if ms[i].Holds != ms[j].Holds {
				return ms[i].Holds
			}
			if ri, rj := max(ms[i].Available, 0), max(ms[j].Available, 0); ri != rj {
				return ri > rj
			}
			return ms[i].Name < ms[j].Name
		})
		for _, m := range ms {
			room[k] += max(m.Available, 0)
			if m.Holds {
				holds[k]++
			}
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if holds[a] != holds[b] {
			return holds[a] > holds[b]
		}
		if room[a] != room[b] {
			return room[a] > room[b]
		}
		if len(byKey[a]) != len(byKey[b]) {
			return len(byKey[a]) > len(byKey[b])
		}
		return a < b
	})
	out := make([][]Member, len(keys))
	for i, k := range keys {
		out[i] = byKey[k]
	}
	return out
}

func spreadKey(m Member, c *policyv1.SpreadConstraint) string {
	switch c.SpreadByField {
	case policyv1.SpreadByRegion:
		return m.Region
	case policyv1.SpreadByZone:
		return m.Zone
	case policyv1.SpreadByProvider:
		return m.Provider
	case "":
		return m.Labels[c.SpreadByLabel]
	}
	return m.Name
}

func spreadName(c *policyv1.SpreadConstraint) string {
	if c.SpreadByField != "" {
		return string(c.SpreadByField)
	}
	return "label " + c.SpreadByLabel
}
