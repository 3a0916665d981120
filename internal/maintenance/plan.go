package maintenance

import (
	"fmt"
	"time"

	"github.com/lotse/lotse/internal/releases"
)

// Update is a version change maintenance makes.
type Update struct {
	From, To string
	// Why: "autoUpdate.kubernetesVersion", or the expiration of From.
	Why string
}

func (u Update) String() string { return fmt.Sprintf("kubernetes %s -> %s (%s)", u.From, u.To, u.Why) }

// Plan says which version a cluster at version moves to in its next
// maintenance, if any: off an expired version to the next supported one
// (always), or to the newest patch of its minor (with autoUpdate).
func Plan(cat releases.Catalog, version string, autoUpdate bool, now time.Time) (Update, bool) {
	r, err := cat.Lookup(version)
	if err != nil {
		return Update{}, false
	}
	if r.ClassificationAt(now) == releases.Expired {
		next, ok := cat.NextSupported(r.Version, now)
		if !ok || next.Version == r.Version {
			return Update{}, false
		}
		return Update{From: r.Version, To: next.Version, Why: "expired on " + r.ExpirationDate}, true
	}
	if !autoUpdate {
		return Update{}, false
	}
	latest, ok := cat.LatestPatch(r.Version)
	if !ok || latest.Version == r.Version || latest.ClassificationAt(now) == releases.Expired {
		return Update{}, false
	}
	return Update{From: r.Version, To: latest.Version, Why: "autoUpdate.kubernetesVersion"}, true
}
