package bench

import (
	"encoding/json"
	"fmt"
	"os"
)

// MergeInto completes rep (a run of some sections, -only) with the other sections of the
// report in prevJSON (an earlier BENCHMARKS.json), so that re-measuring what changed does
// not cost a full run. The sections come in the registry's order; each one taken from the
// earlier run says so in a note, with that run's date and commit, since its figures were
// not measured with this binary. A section in neither is left out.
func MergeInto(rep *Report, prevJSON string) error {
	b, err := os.ReadFile(prevJSON)
	if err != nil {
		return fmt.Errorf("read earlier report: %w", err)
	}
	var prev Report
	if err := json.Unmarshal(b, &prev); err != nil {
		return fmt.Errorf("parse earlier report %s: %w", prevJSON, err)
	}
	if prev.Schema != ReportSchema {
		return fmt.Errorf("earlier report %s: schema %q, want %q", prevJSON, prev.Schema, ReportSchema)
	}
	now := map[string]*Result{}
	for _, s := range rep.Sections {
		now[s.ID] = s
	}
	old := map[string]*Result{}
	for _, s := range prev.Sections {
		old[s.ID] = s
	}
	var out []*Result
	for _, s := range Sections {
		switch {
		case now[s.ID] != nil:
			out = append(out, now[s.ID])
		case old[s.ID] != nil:
			r := old[s.ID]
			r.Notes = append(r.Notes, fmt.Sprintf("Not re-measured in this run: from the run of %s (commit %s, %s mode).",
				prev.Started.UTC().Format("2006-01-02 15:04 MST"), prev.Machine.Commit, prev.Mode))
			out = append(out, r)
		}
	}
	rep.Sections = out
	return nil
}
