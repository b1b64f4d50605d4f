package lint

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Report is what lint and doctor print.
type Report struct {
	Findings []Finding `json:"findings"`
	Notes    []Note    `json:"notes,omitempty"`
}

// CheckFormat reports whether Write knows format.
func CheckFormat(format string) error {
	switch format {
	case "", "table", "json", "sarif":
		return nil
	}
	return fmt.Errorf("output %q: want table, json or sarif", format)
}

// Write prints r as a table, json or sarif.
func (r Report) Write(w io.Writer, format, tool string) error {
	if err := CheckFormat(format); err != nil {
		return err
	}
	switch format {
	case "", "table":
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEVERITY\tID\tOBJECT\tWHERE\tPROBLEM\tFIX")
		for _, f := range r.Findings {
			where := "-"
			if f.File != "" {
				where = fmt.Sprintf("%s:%d", f.File, f.Line)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Level, f.ID, f.Object, where, f.Message, f.Fix)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, n := range r.Notes {
			fmt.Fprintf(w, "note: %s: %s\n", n.Where(), n.Message)
		}
		fmt.Fprintf(w, "%d findings (%s)\n", len(r.Findings), r.summary())
		return nil
	case "json":
		if r.Findings == nil {
			r.Findings = []Finding{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	case "sarif":
		return json.NewEncoder(w).Encode(r.sarif(tool))
	}
	return nil
}

func (r Report) summary() string {
	n := map[string]int{}
	for _, f := range r.Findings {
		n[f.Level]++
	}
	return fmt.Sprintf("%d errors, %d warnings, %d info", n["error"], n["warning"], n["info"])
}

// sarif is SARIF 2.1.0, for code-scanning UIs.
func (r Report) sarif(tool string) map[string]any {
	var rules []map[string]any
	for _, c := range Checks() {
		rules = append(rules, map[string]any{"id": c.ID, "shortDescription": map[string]string{"text": c.Title},
			"defaultConfiguration": map[string]string{"level": sarifLevel(c.Severity)}})
	}
	results := []map[string]any{} // an empty array, never null: the schema requires one
	for _, f := range r.Findings {
		res := map[string]any{"ruleId": f.ID, "level": sarifLevel(f.Severity),
			"message": map[string]string{"text": f.Object + ": " + f.Message + " Fix: " + f.Fix}}
		if f.File != "" {
			res["locations"] = []map[string]any{{"physicalLocation": map[string]any{
				"artifactLocation": map[string]string{"uri": strings.TrimPrefix(f.File, "./")},
				"region":           map[string]int{"startLine": max(f.Line, 1)}}}}
		}
		results = append(results, res)
	}
	return map[string]any{
		"version": "2.1.0",
		"$schema": "https://json.schemastore.org/sarif-2.1.0.json",
		"runs": []map[string]any{{
			"tool":    map[string]any{"driver": map[string]any{"name": tool, "informationUri": "https://github.com/cloudless-dev/cloudless/blob/main/docs/doctor.md", "rules": rules}},
			"results": results,
		}},
	}
}

func sarifLevel(s Severity) string { return [...]string{"note", "warning", "error"}[s] }

// Exit codes of lint and doctor.
const (
	ExitFindings = 1 // findings at or above --fail-on
	ExitError    = 2 // findings of severity error; input that cannot be parsed or read; bad flags
)

// ExitCode is ExitError with errors, ExitFindings with findings at or
// above failOn, else 0.
func ExitCode(fs []Finding, failOn Severity) int {
	w := Worst(fs)
	switch {
	case w >= Error:
		return ExitError
	case w >= failOn && w >= 0:
		return ExitFindings
	}
	return 0
}
