package configs

import (
	"encoding/json"
	"fmt"
	"strings"
)

// fileMetrics is zot's extensions.metrics.
type fileMetrics struct {
	Enable     *bool           `json:"enable"`
	Prometheus *filePrometheus `json:"prometheus"`
}

type filePrometheus struct {
	Path *string `json:"path"`
}

// defaultMetricsPath is zot's.
const defaultMetricsPath = "/metrics"

// MetricsConfig is extensions.metrics: the Prometheus text exposition of
// pier's counters, served on the registry's own port.
type MetricsConfig struct {
	// Enable serves the metrics; true once the section is present, as in
	// zot.
	Enable bool
	// Path is where they are served; default /metrics.
	Path string
}

func resolveMetrics(f *fileMetrics) (*MetricsConfig, error) {
	if f == nil {
		return nil, nil
	}
	m := &MetricsConfig{Enable: value(f.Enable, true), Path: defaultMetricsPath}
	if f.Prometheus != nil && f.Prometheus.Path != nil {
		m.Path = *f.Prometheus.Path
	}
	if !strings.HasPrefix(m.Path, "/") || strings.HasPrefix(m.Path+"/", "/v2/") || strings.ContainsAny(m.Path, "?#") || m.Path == "/" {
		return nil, &KeyError{Key: "extensions.metrics.prometheus.path", Message: fmt.Sprintf("%q is not a path pier can serve metrics on (like \"/metrics\"; not below /v2/)", m.Path)}
	}
	return m, nil
}

// metricsAccess reads accessControl.metrics: {"users": [...]}, the users
// who may read the metrics.
func metricsAccess(raw json.RawMessage, key string) ([]string, error) {
	fields, err := members(raw, key)
	if err != nil {
		return nil, err
	}
	users := []string{}
	for _, f := range fields {
		if !strings.EqualFold(f.key, "users") {
			return nil, fmt.Errorf("%s.%s: unknown key (metrics has users)", key, f.key)
		}
		var list []string
		if err := json.Unmarshal(f.value, &list); err != nil {
			return nil, fmt.Errorf("%s.%s: expected a list of names", key, f.key)
		}
		users = append(users, list...)
	}
	return users, nil
}
