package monitoring

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/lotse/lotse/internal/metrics"
)

var metricName = regexp.MustCompile(`\b(lotse_[a-z_]+|controller_runtime_[a-z_]+)`)

// known says whether a name in an expression is a series Lotse's manager
// exports (histograms add _bucket, _sum and _count).
func known(name string) bool {
	if strings.HasPrefix(name, "controller_runtime_reconcile_") {
		return true
	}
	for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
		if slices.Contains(metrics.Names, strings.TrimSuffix(name, suffix)) && (suffix == "" || strings.HasSuffix(name, suffix)) {
			return true
		}
	}
	return false
}

func TestRules(t *testing.T) {
	var file struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				For         string            `json:"for"`
				Expr        string            `json:"expr"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(Rules, &file); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %+v lacks a name, expression, severity or summary", r)
			}
			names := metricName.FindAllString(r.Expr, -1)
			if len(names) == 0 {
				t.Errorf("%s: no Lotse metric in %q", r.Alert, r.Expr)
			}
			for _, m := range names {
				if !known(m) {
					t.Errorf("%s uses %s, which the manager does not export", r.Alert, m)
				}
			}
		}
	}
	if n < 5 {
		t.Errorf("%d rules", n)
	}
}

func TestDashboard(t *testing.T) {
	var d struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(Dashboard, &d); err != nil {
		t.Fatal(err)
	}
	if d.Title == "" || len(d.Panels) < 5 {
		t.Fatalf("dashboard %q with %d panels", d.Title, len(d.Panels))
	}
	for _, p := range d.Panels {
		for _, target := range p.Targets {
			for _, m := range metricName.FindAllString(target.Expr, -1) {
				if !known(m) {
					t.Errorf("panel %q uses %s, which the manager does not export", p.Title, m)
				}
			}
		}
	}
}
