package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A run of one section merged with an earlier full report: every registered section
// once, in the registry's order; the re-measured one from this run, the others from the
// earlier one with a note naming it.
func TestMergeInto(t *testing.T) {
	if len(Sections) < 2 {
		t.Skip("needs two sections")
	}
	dir := t.TempDir()
	prev := &Report{Schema: ReportSchema, Mode: "full", Started: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC),
		Machine: Machine{Commit: "abc1234"}}
	for _, s := range Sections {
		prev.Sections = append(prev.Sections, &Result{ID: s.ID, Title: s.Title, Status: StatusOK, Headlines: []string{"old " + s.ID}})
	}
	md, js := filepath.Join(dir, "B.md"), filepath.Join(dir, "B.json")
	if err := prev.WriteFiles(md, js); err != nil {
		t.Fatal(err)
	}
	last := Sections[len(Sections)-1]
	rep := &Report{Schema: ReportSchema, Mode: "full", Sections: []*Result{{ID: last.ID, Title: last.Title, Status: StatusOK,
		Headlines: []string{"new " + last.ID}}}}
	if err := MergeInto(rep, js); err != nil {
		t.Fatal(err)
	}
	if len(rep.Sections) != len(Sections) {
		t.Fatalf("%d sections, want %d", len(rep.Sections), len(Sections))
	}
	for i, s := range rep.Sections {
		if s.ID != Sections[i].ID {
			t.Errorf("section %d is %s, want %s", i, s.ID, Sections[i].ID)
		}
		fresh := s.ID == last.ID
		if got := s.Headlines[0]; (got == "new "+s.ID) != fresh {
			t.Errorf("section %s: headline %q", s.ID, got)
		}
		noted := len(s.Notes) > 0 && strings.Contains(s.Notes[len(s.Notes)-1], "commit abc1234")
		if noted == fresh {
			t.Errorf("section %s: notes %q", s.ID, s.Notes)
		}
	}
	if err := rep.WriteFiles(md, js); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(md)
	if !strings.Contains(string(b), "new "+last.ID) || !strings.Contains(string(b), "old "+Sections[0].ID) {
		t.Errorf("markdown lacks a section:\n%s", b)
	}
	if err := MergeInto(rep, filepath.Join(dir, "missing.json")); err == nil {
		t.Error("a missing earlier report merged")
	}
}
