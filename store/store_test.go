package store

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/turnpath/turnpath/asn"
	"github.com/turnpath/turnpath/report"
)

var ctx = context.Background()

func f(x float64) *float64 { return &x }

// view makes a trace view: per TTL its responders ("" silent).
func view(run int64, at time.Time, dest int, hops ...string) View {
	v := View{RunID: run, Kind: "trace", Proto: "udp", Port: 3478, Time: at, Address: "198.19.1.1", Reached: dest > 0, DestTTL: dest, Sent: 3 * len(hops)}
	for i, a := range hops {
		h := Hop{TTL: i + 1, Sent: 3, Received: 3, Loss: f(0), RTTAvg: f(1)}
		if a == "" {
			h.Received, h.Loss, h.RTTAvg = 0, f(100), nil
		} else {
			h.Responders = []Responder{{Address: a, Count: 3}}
		}
		v.Hops = append(v.Hops, h)
	}
	return v
}

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "history.db")
	s, err := Open(ctx, p, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, p
}

func record(t *testing.T, s *Store, at time.Time, vs ...View) int64 {
	t.Helper()
	id, err := s.BeginRun(ctx, Run{Kind: "trace", Started: at, Version: "test", Proto: "udp", Port: 3478})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddViews(ctx, id, vs); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishRun(ctx, id, at.Add(time.Second), StatusOK); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestRoundTrip(t *testing.T) {
	s, _ := openTemp(t)
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	v := view(0, at, 3, "198.18.1.2", "", "198.19.1.1")
	v.Hops[0].Responders = append(v.Hops[0].Responders, Responder{Address: "198.18.9.9", Count: 1, ASN: new(int64)})
	v.PathLoss = f(0)
	v.Links = []Link{{From: "198.18.1.2", To: "*198.18.1.2+1", Flows: 4, TTLs: []int{1, 2}}}
	id := record(t, s, at, v)
	got, err := s.Views(ctx, Filter{Target: "198.19.1.1"})
	if err != nil || len(got) != 1 {
		t.Fatalf("views: %v %d", err, len(got))
	}
	v.ID, v.RunID = got[0].ID, id
	if d := cmp.Diff(v, got[0]); d != "" {
		t.Errorf("read back (-want +got):\n%s", d)
	}
	runs, err := s.Runs(ctx, Filter{})
	if err != nil || len(runs) != 1 || runs[0].Status != StatusOK || runs[0].Targets != 1 || !runs[0].Started.Equal(at) {
		t.Errorf("runs: %v %+v", err, runs)
	}
	if vs, _ := s.Views(ctx, Filter{Target: "198.19.9.9"}); len(vs) != 0 {
		t.Errorf("another target's views: %d", len(vs))
	}
}

// An older file is migrated, keeping what it holds; a newer one is refused.
func TestMigrateFromV1(t *testing.T) {
	p := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", "file:"+p)
	if err != nil {
		t.Fatal(err)
	}
	old := &Store{db: db, path: p}
	if err := old.migrate(ctx, 1); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	if _, err := db.Exec(`INSERT INTO runs (kind, started, version) VALUES ('trace', ?, 'v0.1')`, stamp(at)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO views (run_id, time, address, reached, dest_ttl) VALUES (1, ?, '198.19.1.1', 1, 9)`, stamp(at)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO hops (view_id, ttl) VALUES (1, 1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO responders (hop_id, address, count) VALUES (1, '198.18.1.2', 3)`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, err := Open(ctx, p, false)
	if err != nil {
		t.Fatalf("open v1: %v", err)
	}
	if v, err := s.version(ctx); err != nil || v != SchemaVersion() {
		t.Errorf("after open: version %d %v, want %d", v, err, SchemaVersion())
	}
	vs, err := s.Views(ctx, Filter{})
	if err != nil || len(vs) != 1 || vs[0].DestTTL != 9 || len(vs[0].Hops) != 1 || vs[0].Hops[0].Responders[0].ASN != nil {
		t.Fatalf("v1 data after migration: %v %+v", err, vs)
	}
	if _, err := s.db.Exec(`UPDATE schema_version SET version = 99`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = Open(ctx, p, false)
	var se *SchemaError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "schema version 99 is newer") {
		t.Errorf("newer schema: %v", err)
	}
}

func TestOpenBadFiles(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.db")
	os.WriteFile(junk, []byte("this is not a database, just some text that is long enough to look like a header....................."), 0o644)
	other := filepath.Join(dir, "other.db")
	db, _ := sql.Open("sqlite", "file:"+other)
	db.Exec(`CREATE TABLE t (x)`)
	db.Close()
	for name, tc := range map[string]struct {
		path   string
		create bool
		want   string
	}{
		"missing":     {filepath.Join(dir, "none.db"), false, "no such store"},
		"missing dir": {filepath.Join(dir, "no", "x.db"), true, "does not exist"},
		"directory":   {dir, true, "is a directory"},
		"junk":        {junk, false, "not a turnpath store"},
		"other":       {other, false, "not a turnpath store"},
	} {
		s, err := Open(ctx, tc.path, tc.create)
		if err == nil {
			s.Close()
			t.Errorf("%s: no error", name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "none.db")); err == nil {
		t.Error("reading a missing store created it")
	}
}

func TestPrune(t *testing.T) {
	s, _ := openTemp(t)
	now := time.Now().UTC()
	old := record(t, s, now.Add(-40*24*time.Hour), view(0, now.Add(-40*24*time.Hour), 2, "198.18.1.2", "198.19.1.1"))
	young := record(t, s, now.Add(-time.Hour), view(0, now.Add(-time.Hour), 2, "198.18.1.2", "198.19.1.1"))
	n, err := s.Prune(ctx, now.Add(-30*24*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("prune: %d %v", n, err)
	}
	runs, _ := s.Runs(ctx, Filter{})
	if len(runs) != 1 || runs[0].ID != young {
		t.Fatalf("left: %+v (old was %d)", runs, old)
	}
	// The cascade took the old run's views, hops and responders with it.
	for _, table := range []string{"views", "hops", "responders"} {
		var c int
		s.db.QueryRow(`SELECT count(*) FROM ` + table).Scan(&c)
		if want := map[string]int{"views": 1, "hops": 2, "responders": 2}[table]; c != want {
			t.Errorf("%s: %d rows, want %d", table, c, want)
		}
	}
}

func TestChanges(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	a := view(1, t0, 4, "198.18.1.2", "198.18.2.2", "198.18.4.2", "198.19.1.1")
	same := view(2, t0.Add(time.Hour), 4, "198.18.1.2", "198.18.2.2", "198.18.4.2", "198.19.1.1")
	moved := view(3, t0.Add(2*time.Hour), 5, "198.18.1.2", "198.18.2.2", "198.18.5.2", "", "198.19.1.1")
	moved.Hops[0].RTTAvg = f(30) // +29 ms at TTL 1
	moved.Hops[1].Loss = f(66.7) // loss at TTL 2
	got := Changes([]View{a, same, moved}, DefaultThresholds)
	type c struct {
		Kind     ChangeKind
		Run      int64
		TTL      int
		Old, New []string
	}
	var short []c
	for _, x := range got {
		if x.PrevRun != x.Run-1 || x.Target != "198.19.1.1" {
			t.Errorf("%+v: wrong run or target", x)
		}
		short = append(short, c{x.Kind, x.Run, x.TTL, x.Old, x.New})
	}
	want := []c{
		{DestDistance, 3, 0, []string{"4"}, []string{"5"}},
		{RTTShift, 3, 1, []string{"1.0 ms"}, []string{"30.0 ms"}},
		{LossShift, 3, 2, []string{"0 %"}, []string{"67 %"}},
		{HopChanged, 3, 3, []string{"198.18.4.2"}, []string{"198.18.5.2"}},
		{HopChanged, 3, 4, []string{"198.19.1.1"}, []string{}},
	}
	// TTL 4: the destination there before, silent now; TTL 5 new.
	want[4] = c{HopVanished, 3, 4, []string{"198.19.1.1"}, []string{}}
	want = append(want, c{HopAppeared, 3, 5, []string{}, []string{"198.19.1.1"}})
	if d := cmp.Diff(want, short); d != "" {
		t.Errorf("changes (-want +got):\n%s", d)
	}

	// ECMP: a second responder at a TTL is a new branch, one fewer a branch gone.
	wide := view(4, t0.Add(3*time.Hour), 5, "198.18.1.2", "198.18.2.2", "198.18.5.2", "", "198.19.1.1")
	wide.Hops[2].Responders = append(wide.Hops[2].Responders, Responder{Address: "198.18.4.2"})
	back := view(5, t0.Add(4*time.Hour), 5, "198.18.1.2", "198.18.2.2", "198.18.5.2", "", "198.19.1.1")
	got = Changes([]View{moved, wide, back}, Thresholds{})
	if len(got) != 2 || got[0].Kind != BranchNew || got[0].TTL != 3 || got[1].Kind != BranchGone || !cmp.Equal(got[1].New, []string{"198.18.5.2"}) {
		t.Errorf("ecmp: %+v", got)
	}

	// Unreached, another port (another series), AS numbers.
	lost := view(6, t0.Add(5*time.Hour), 0, "198.18.1.2", "", "", "", "")
	other := view(7, t0.Add(6*time.Hour), 4, "198.18.1.2", "198.18.2.2", "198.18.4.2", "198.19.1.1")
	other.Port = 443
	got = Changes([]View{back, lost, other}, Thresholds{})
	if len(got) == 0 || got[0].Kind != Reach || got[0].Old[0] != "reached" || got[len(got)-1].Run != 6 {
		t.Errorf("reach / series: %+v", got)
	}
	as1, as2 := int64(64500), int64(64501)
	x, y := view(8, t0, 2, "198.18.1.2", "198.19.1.1"), view(9, t0.Add(time.Hour), 2, "198.18.1.2", "198.19.1.1")
	x.Hops[0].Responders[0].ASN, y.Hops[0].Responders[0].ASN = &as1, &as2
	if got := Diff(&x, &y, Thresholds{}); len(got) != 1 || got[0].Kind != ASChanged || got[0].New[0] != "AS64501" {
		t.Errorf("as: %+v", got)
	}
}

func TestViewsOfReports(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.FixedZone("CET", 3600))
	tr := report.Target{Name: "relay", Address: "198.19.1.1", Reached: true, DestTTL: 2, Sent: 6, Started: at,
		Hops: []report.Hop{
			{TTL: 1, Addresses: []string{"198.18.1.2", "198.18.9.2"}, AS: []asn.Info{{ASN: 64500}, {Private: true}}, Sent: 3, Received: 3, AvgMS: f(1),
				Probes: []report.Probe{{Answered: true, From: "198.18.1.2"}, {Answered: true, From: "198.18.1.2"}, {Answered: true, From: "198.18.9.2"}}},
			{TTL: 2, Addresses: []string{"198.19.1.1"}, Sent: 3, Received: 2, LossPct: 33.3},
		}}
	v := TraceView(tr)
	if !v.Time.Equal(at) || v.Time.Location() != time.UTC || v.PathLoss == nil || *v.PathLoss != 33.3 {
		t.Errorf("trace view: %v %v", v.Time, v.PathLoss)
	}
	r := v.Hops[0].Responders
	if len(r) != 2 || r[0].Count != 2 || r[1].Count != 1 || r[0].ASN == nil || *r[0].ASN != 64500 || r[1].ASN != nil {
		t.Errorf("responders: %+v", r)
	}
	mp := report.MultipathDocTarget{Address: "198.19.1.1", Reached: true, DestTTLs: []int{10, 9},
		Hops:  []report.MultipathDocHop{{TTL: 1, Nodes: []string{"198.18.1.2"}}, {TTL: 2, Nodes: []string{"*198.18.1.2+1", "198.18.3.2"}}},
		Nodes: []report.MultipathDocNode{{ID: "198.18.1.2", Address: "198.18.1.2", Flows: 6}, {ID: "*198.18.1.2+1", Anonymous: true}, {ID: "198.18.3.2", Address: "198.18.3.2", AvgMS: f(2)}},
		Links: []report.MultipathDocLink{{From: "198.18.1.2", To: "198.18.3.2", Flows: 3, TTLs: []int{1}}}}
	v = MultipathView(mp, at)
	if v.DestTTL != 9 || v.DestTTLMax != 10 || len(v.Hops) != 2 || len(v.Hops[1].Responders) != 1 || *v.Hops[1].RTTAvg != 2 || len(v.Links) != 1 {
		t.Errorf("multipath view: %+v", v)
	}
}

// Cron jobs starting together on a new store: it is created and migrated once, and
// every one of them records its run.
func TestConcurrentOpen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "h.db")
	const n = 6
	errs := make(chan error, n)
	for range n {
		go func() {
			s, err := Open(ctx, p, true)
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			at := time.Now()
			id, err := s.BeginRun(ctx, Run{Kind: "trace", Started: at, Version: "test"})
			if err == nil {
				err = s.AddViews(ctx, id, []View{view(id, at, 2, "198.18.1.2", "198.19.1.1")})
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	s, err := Open(ctx, p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if runs, err := s.Runs(ctx, Filter{}); err != nil || len(runs) != n {
		t.Errorf("runs: %d %v", len(runs), err)
	}
}
