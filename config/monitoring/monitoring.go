// Package monitoring holds the example Prometheus alerting rules and the
// Grafana dashboard for Lotse's manager metrics, embedded so that the
// tests check them against the metrics the manager exports.
package monitoring

import _ "embed"

// Rules is the Prometheus rule file.
//
//go:embed prometheus-rules.yaml
var Rules []byte

// Dashboard is the Grafana dashboard.
//
//go:embed grafana-dashboard.json
var Dashboard []byte
