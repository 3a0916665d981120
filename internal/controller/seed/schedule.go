package seed

import (
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// Schedule chooses the seed of a new control plane: of the seeds the
// selector matches that are Ready, not being deleted and below their
// capacity, one in region if there is one, then the one hosting fewest
// control planes, then by name. hosted counts the control planes per seed
// (the status of Clusters, which is newer than the seeds' own counts).
// Without a choice, the error says for each seed why it was passed over.
func Schedule(selector *metav1.LabelSelector, region string, seeds []lotsev1.Seed, hosted map[string]int) (string, error) {
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		return "", fmt.Errorf("spec.controlPlane.seedSelector: %w", err)
	}
	type candidate struct {
		name     string
		inRegion bool
		load     int
	}
	var fit []candidate
	var reasons []string
	sorted := append([]lotsev1.Seed(nil), seeds...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for _, s := range sorted {
		switch {
		case !sel.Matches(labels.Set(s.Labels)):
			continue
		case s.DeletionTimestamp != nil:
			reasons = append(reasons, s.Name+": being deleted")
		case !meta.IsStatusConditionTrue(s.Status.Conditions, lotsev1.ConditionSeedReady):
			why := "not Ready"
			if c := meta.FindStatusCondition(s.Status.Conditions, lotsev1.ConditionSeedReady); c != nil && c.Message != "" {
				why += " (" + c.Message + ")"
			}
			reasons = append(reasons, s.Name+": "+why)
		case hosted[s.Name] >= int(s.ControlPlaneCapacity()):
			reasons = append(reasons, fmt.Sprintf("%s: full (%d of %d control planes)", s.Name, hosted[s.Name], s.ControlPlaneCapacity()))
		default:
			fit = append(fit, candidate{name: s.Name, inRegion: s.Spec.Region == region, load: hosted[s.Name]})
		}
	}
	if len(fit) == 0 {
		if len(reasons) == 0 {
			return "", fmt.Errorf("no Seed matches spec.controlPlane.seedSelector %s", describe(sel))
		}
		return "", fmt.Errorf("no matching Seed can take the control plane: %s", strings.Join(reasons, "; "))
	}
	sort.SliceStable(fit, func(i, j int) bool {
		if fit[i].inRegion != fit[j].inRegion {
			return fit[i].inRegion
		}
		return fit[i].load < fit[j].load
	})
	return fit[0].name, nil
}

func describe(sel labels.Selector) string {
	if sel.Empty() {
		return "{} (there are no seeds)"
	}
	return "(" + sel.String() + ")"
}
