package store

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Run is one recorded run of trace, multipath or monitor.
type Run struct {
	ID       int64
	Kind     string // trace, multipath, monitor
	Started  time.Time
	Finished time.Time // zero while running (or when the run was killed)
	Version  string
	Engine   string
	Proto    string
	Port     int
	Options  string // the report's options as JSON
	Status   string // running, ok, not-reached, failed
	Host     string
	Targets  int // distinct target addresses recorded (Runs fills it)
}

// Run statuses.
const (
	StatusRunning    = "running"
	StatusOK         = "ok"
	StatusNotReached = "not-reached"
	StatusFailed     = "failed"
)

// View is the path to one target as one run saw it (monitor: as one interval saw it).
// Kind, Proto and Port are the run's (filled when read).
type View struct {
	ID, RunID   int64
	Kind, Proto string
	Port        int
	Seq         int // monitor: the interval; 0 otherwise
	Time        time.Time
	Name        string
	Address     string
	Source      string
	Reached     bool
	DestTTL     int // 0 unknown; multipath: the shortest branch
	DestTTLMax  int // multipath: the longest branch (0: as DestTTL)
	Sent        int
	PathLoss    *float64 // percent; nil unknown
	Hops        []Hop
	Links       []Link
}

// Hop is one TTL of a view. Loss and RTTs are nil when not measured.
type Hop struct {
	TTL                    int
	Sent, Received         int
	Loss, Forward, Reply   *float64 // percent
	RTTMin, RTTAvg, RTTMax *float64 // milliseconds
	Jitter                 *float64
	Responders             []Responder // most frequent first; none: silent
}

// Responder is an address that answered at a hop.
type Responder struct {
	Address string
	Count   int
	RTTAvg  *float64
	ASN     *int64 // the AS number, once turnpath looks them up; nil unknown
}

// Link is a multipath link between two node ids (addresses, or mda's ids of silent hops).
type Link struct {
	From, To string
	Flows    int
	TTLs     []int
}

// Addresses are the hop's responders' addresses.
func (h *Hop) Addresses() []string {
	out := make([]string, len(h.Responders))
	for i, r := range h.Responders {
		out[i] = r.Address
	}
	return out
}

// BeginRun records a run's start and returns its id.
func (s *Store) BeginRun(ctx context.Context, r Run) (int64, error) {
	if r.Status == "" {
		r.Status = StatusRunning
	}
	if r.Options == "" {
		r.Options = "{}"
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO runs (kind, started, version, engine, proto, port, options, status, host)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, r.Kind, stamp(r.Started), r.Version, r.Engine, r.Proto, r.Port, r.Options, r.Status, r.Host)
	if err != nil {
		return 0, s.writeErr("record run", err)
	}
	return res.LastInsertId()
}

// UpdateRun sets what is known only once the run has begun (engine, options).
func (s *Store) UpdateRun(ctx context.Context, id int64, engine, options string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE runs SET engine = ?, options = ? WHERE id = ?`, engine, options, id); err != nil {
		return s.writeErr("record run", err)
	}
	return nil
}

// FinishRun records a run's end.
func (s *Store) FinishRun(ctx context.Context, id int64, finished time.Time, status string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE runs SET finished = ?, status = ? WHERE id = ?`, stamp(finished), status, id); err != nil {
		return s.writeErr("record run end", err)
	}
	return nil
}

// AddViews records views of run id, in one transaction.
func (s *Store) AddViews(ctx context.Context, id int64, vs []View) error {
	if len(vs) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.writeErr("record views", err)
	}
	defer tx.Rollback()
	for i := range vs {
		if err := addView(ctx, tx, id, &vs[i]); err != nil {
			return s.writeErr("record views", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return s.writeErr("record views", err)
	}
	return nil
}

func addView(ctx context.Context, tx *sql.Tx, run int64, v *View) error {
	res, err := tx.ExecContext(ctx, `INSERT INTO views (run_id, seq, time, name, address, source, reached, dest_ttl, dest_ttl_max, sent, path_loss)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, run, v.Seq, stamp(v.Time), v.Name, v.Address, v.Source, v.Reached, v.DestTTL, v.DestTTLMax, v.Sent, v.PathLoss)
	if err != nil {
		return err
	}
	vid, err := res.LastInsertId()
	if err != nil {
		return err
	}
	for _, h := range v.Hops {
		res, err := tx.ExecContext(ctx, `INSERT INTO hops (view_id, ttl, sent, received, loss, forward, reply, rtt_min, rtt_avg, rtt_max, jitter)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, vid, h.TTL, h.Sent, h.Received, h.Loss, h.Forward, h.Reply, h.RTTMin, h.RTTAvg, h.RTTMax, h.Jitter)
		if err != nil {
			return err
		}
		hid, err := res.LastInsertId()
		if err != nil {
			return err
		}
		for _, r := range h.Responders {
			if _, err := tx.ExecContext(ctx, `INSERT INTO responders (hop_id, address, count, rtt_avg, asn) VALUES (?, ?, ?, ?, ?)`,
				hid, r.Address, r.Count, r.RTTAvg, r.ASN); err != nil {
				return err
			}
		}
	}
	for _, l := range v.Links {
		ttls := make([]string, len(l.TTLs))
		for i, t := range l.TTLs {
			ttls[i] = strconv.Itoa(t)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO links (view_id, from_node, to_node, flows, ttls) VALUES (?, ?, ?, ?, ?)`,
			vid, l.From, l.To, l.Flows, strings.Join(ttls, ",")); err != nil {
			return err
		}
	}
	return nil
}

// Filter selects runs: all of them when zero.
type Filter struct {
	Target string  // a target's address or name as given; "" any
	IDs    []int64 // these runs only
	Limit  int     // the latest Limit runs; 0 all
}

// where builds the WHERE clause over runs r.
func (f Filter) where() (string, []any) {
	var conds []string
	var args []any
	if f.Target != "" {
		conds = append(conds, `EXISTS (SELECT 1 FROM views v WHERE v.run_id = r.id AND (v.address = ? OR v.name = ?))`)
		args = append(args, f.Target, f.Target)
	}
	if len(f.IDs) > 0 {
		conds = append(conds, `r.id IN (`+strings.TrimSuffix(strings.Repeat("?,", len(f.IDs)), ",")+`)`)
		for _, id := range f.IDs {
			args = append(args, id)
		}
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// Runs lists the runs f selects, oldest first.
func (s *Store) Runs(ctx context.Context, f Filter) ([]Run, error) {
	where, args := f.where()
	q := `SELECT r.id, r.kind, r.started, coalesce(r.finished, ''), r.version, r.engine, r.proto, r.port, r.options, r.status, r.host,
		(SELECT count(DISTINCT address) FROM views v WHERE v.run_id = r.id) FROM runs r` + where + ` ORDER BY r.started DESC, r.id DESC`
	if f.Limit > 0 {
		q += ` LIMIT ` + strconv.Itoa(f.Limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read runs from %s: %w", s.path, err)
	}
	defer rows.Close()
	var out []Run
	for rows.Next() {
		var r Run
		var started, finished string
		if err := rows.Scan(&r.ID, &r.Kind, &started, &finished, &r.Version, &r.Engine, &r.Proto, &r.Port, &r.Options, &r.Status, &r.Host, &r.Targets); err != nil {
			return nil, fmt.Errorf("read runs from %s: %w", s.path, err)
		}
		r.Started, r.Finished = parseStamp(started), parseStamp(finished)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read runs from %s: %w", s.path, err)
	}
	// Oldest first: the order of a history.
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// Views reads the views of the runs f selects (of f.Target only, when set), in time
// order, with their hops, responders and links.
func (s *Store) Views(ctx context.Context, f Filter) ([]View, error) {
	runs, err := s.Runs(ctx, f)
	if err != nil {
		return nil, err
	}
	var out []View
	for _, r := range runs {
		vs, err := s.runViews(ctx, r, f.Target)
		if err != nil {
			return nil, fmt.Errorf("read views from %s: %w", s.path, err)
		}
		out = append(out, vs...)
	}
	return out, nil
}

func (s *Store) runViews(ctx context.Context, r Run, target string) ([]View, error) {
	q := `SELECT id, seq, time, name, address, source, reached, dest_ttl, dest_ttl_max, sent, path_loss FROM views WHERE run_id = ?`
	args := []any{r.ID}
	if target != "" {
		q += ` AND (address = ? OR name = ?)`
		args = append(args, target, target)
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY seq, id`, args...)
	if err != nil {
		return nil, err
	}
	var vs []View
	for rows.Next() {
		v := View{RunID: r.ID, Kind: r.Kind, Proto: r.Proto, Port: r.Port}
		var t string
		if err := rows.Scan(&v.ID, &v.Seq, &t, &v.Name, &v.Address, &v.Source, &v.Reached, &v.DestTTL, &v.DestTTLMax, &v.Sent, &v.PathLoss); err != nil {
			rows.Close()
			return nil, err
		}
		v.Time = parseStamp(t)
		vs = append(vs, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range vs {
		if err := s.fill(ctx, &vs[i]); err != nil {
			return nil, err
		}
	}
	return vs, nil
}

// fill reads a view's hops, their responders, and its links.
func (s *Store) fill(ctx context.Context, v *View) error {
	rows, err := s.db.QueryContext(ctx, `SELECT h.id, h.ttl, h.sent, h.received, h.loss, h.forward, h.reply, h.rtt_min, h.rtt_avg, h.rtt_max, h.jitter,
		r.address, r.count, r.rtt_avg, r.asn
		FROM hops h LEFT JOIN responders r ON r.hop_id = h.id WHERE h.view_id = ? ORDER BY h.ttl, h.id, r.count DESC, r.address`, v.ID)
	if err != nil {
		return err
	}
	defer rows.Close()
	last := int64(-1)
	for rows.Next() {
		var id int64
		var h Hop
		var addr sql.NullString
		var count sql.NullInt64
		var r Responder
		if err := rows.Scan(&id, &h.TTL, &h.Sent, &h.Received, &h.Loss, &h.Forward, &h.Reply, &h.RTTMin, &h.RTTAvg, &h.RTTMax, &h.Jitter,
			&addr, &count, &r.RTTAvg, &r.ASN); err != nil {
			return err
		}
		if id != last {
			v.Hops = append(v.Hops, h)
			last = id
		}
		if addr.Valid {
			r.Address, r.Count = addr.String, int(count.Int64)
			cur := &v.Hops[len(v.Hops)-1]
			cur.Responders = append(cur.Responders, r)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	lrows, err := s.db.QueryContext(ctx, `SELECT from_node, to_node, flows, ttls FROM links WHERE view_id = ? ORDER BY rowid`, v.ID)
	if err != nil {
		return err
	}
	defer lrows.Close()
	for lrows.Next() {
		var l Link
		var ttls string
		if err := lrows.Scan(&l.From, &l.To, &l.Flows, &ttls); err != nil {
			return err
		}
		for f := range strings.SplitSeq(ttls, ",") {
			if n, err := strconv.Atoi(f); err == nil {
				l.TTLs = append(l.TTLs, n)
			}
		}
		v.Links = append(v.Links, l)
	}
	return lrows.Err()
}
