package maintenance

import (
	"testing"
	"time"

	"github.com/lotse/lotse/internal/releases"
)

func TestPlan(t *testing.T) {
	cat := releases.Catalog{
		{Version: "1.37.2", Classification: releases.Supported},
		{Version: "1.36.3", Classification: releases.Supported},
		{Version: "1.36.1", Classification: releases.Supported},
		{Version: "1.35.4", Classification: releases.Deprecated, ExpirationDate: "2027-02-28"},
	}
	today := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	later := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		version    string
		autoUpdate bool
		now        time.Time
		want       string
	}{
		{"older patch with autoUpdate", "1.36.1", true, today, "kubernetes 1.36.1 -> 1.36.3 (autoUpdate.kubernetesVersion)"},
		{"older patch without autoUpdate", "1.36.1", false, today, ""},
		{"newest patch", "1.36.3", true, today, ""},
		{"deprecated, not expired yet", "1.35.4", false, today, ""},
		{"expired: forced even without autoUpdate", "1.35.4", false, later, "kubernetes 1.35.4 -> 1.36.3 (expired on 2027-02-28)"},
		{"not in the catalog", "1.30.0", true, today, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, ok := Plan(cat, tt.version, tt.autoUpdate, tt.now)
			got := ""
			if ok {
				got = u.String()
			}
			if got != tt.want {
				t.Errorf("Plan = %q, want %q", got, tt.want)
			}
		})
	}
}
