package main

import (
	"encoding/json"
	"math"
	"os"
	"slices"
	"time"
)

// Result is one store's measurements, written by `load run` (or `load mark`
// for a store that did not start) and read by `load report`.
type Result struct {
	Store  string `json:"store"`
	Status string `json:"status"` // "ok", "failed to start", "failed: ..."
	Detail string `json:"detail,omitempty"`

	DurationS        float64 `json:"duration_s"`
	CompactIntervalS float64 `json:"compact_interval_s"`

	// Timed phase.
	Writes        int64                     `json:"writes"` // successful mutating requests
	WriteErrors   int64                     `json:"write_errors"`
	Conflicts     int64                     `json:"conflicts"` // Txn compare failed (Else branch)
	WritesPerS    float64                   `json:"writes_per_s"`
	WriteP50Ms    float64                   `json:"write_p50_ms"`
	WriteP99Ms    float64                   `json:"write_p99_ms"`
	WriteMaxMs    float64                   `json:"write_max_ms"`
	ByKind        map[string]LatencySummary `json:"by_kind"`
	WriteCDF      []float64                 `json:"write_cdf_ms"` // latency at quantiles 0.5%, 1%, ... 100%
	Compactions   int                       `json:"compactions"`
	DeviceBytes   int64                     `json:"device_bytes"`
	BytesPerWrite float64                   `json:"bytes_per_write"`
	CPUSeconds    float64                   `json:"cpu_s"`    // datastore server process(es)
	PGCPUSeconds  float64                   `json:"pg_cpu_s"` // postgres processes, when PostgreSQL-backed
	ServerHWM     int64                     `json:"server_peak_rss_bytes"`
	PGPeakPSS     int64                     `json:"pg_peak_pss_bytes"`
	DBSize        []SizePoint               `json:"db_size"`
	DBSizeEnd     int64                     `json:"db_size_end_bytes"`
	LoadAvg       float64                   `json:"load_avg_1m"` // at the end of the timed phase

	// Watch.
	WatchCrossServer bool    `json:"watch_cross_server"`
	WatchEvents      int64   `json:"watch_events"`
	WatchMissed      int64   `json:"watch_missed"`
	WatchP50Ms       float64 `json:"watch_p50_ms"`
	WatchP99Ms       float64 `json:"watch_p99_ms"`

	// List phase.
	ListObjects     int       `json:"list_objects"`
	PageSize        int64     `json:"page_size"`
	ListLoadS       float64   `json:"list_load_s"`
	ListFullMs      []float64 `json:"list_full_ms"`
	ListPagedMs     []float64 `json:"list_paged_ms"`
	ListFullMedMs   float64   `json:"list_full_median_ms"`
	ListPagedMedMs  float64   `json:"list_paged_median_ms"`
	ListCountSeen   int64     `json:"list_count_seen"`
	DBSizeAfterList int64     `json:"db_size_after_list_bytes"`
	ListError       string    `json:"list_error,omitempty"`
}

// SizePoint is the store's disk usage at T seconds into the timed phase.
type SizePoint struct {
	T     float64 `json:"t_s"`
	Bytes int64   `json:"bytes"`
}

// LatencySummary summarises one request kind.
type LatencySummary struct {
	N     int     `json:"n"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// quantile returns the q-quantile (nearest rank) of sorted values.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func summarize(v []float64) LatencySummary {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return LatencySummary{}
	}
	return LatencySummary{N: len(s), P50Ms: quantile(s, 0.5), P99Ms: quantile(s, 0.99), MaxMs: s[len(s)-1]}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return quantile(s, 0.5)
}

// cdf returns the latencies at quantiles 0.5%, 1%, ..., 100%.
func cdf(v []float64) []float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return nil
	}
	out := make([]float64, 200)
	for i := range out {
		out[i] = quantile(s, float64(i+1)/200)
	}
	return out
}

// jsonNumber keeps NaN (no data) out of JSON, which cannot hold it.
func (r *Result) clean() {
	for _, p := range []*float64{&r.WriteP50Ms, &r.WriteP99Ms, &r.WriteMaxMs, &r.WatchP50Ms, &r.WatchP99Ms,
		&r.ListFullMedMs, &r.ListPagedMedMs, &r.BytesPerWrite, &r.WritesPerS} {
		if math.IsNaN(*p) || math.IsInf(*p, 0) {
			*p = -1
		}
	}
}

func writeResult(path string, r *Result) error {
	r.clean()
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func readResult(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Result
	return &r, json.Unmarshal(b, &r)
}
