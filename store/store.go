// Package store keeps the history of turnpath's runs in an SQLite file (modernc.org/sqlite:
// pure Go, the binary stays static and cgo-free): every run, and for each of its targets
// a View (the path as the run saw it: per TTL the responders, RTT and loss). trace and
// multipath give one view per target, monitor one per target and interval. Changes finds
// what changed between consecutive views of a target, as a pure function.
//
// The schema is versioned: schema_version holds the version, migrations (an ordered
// list, applied in one transaction each) bring an older file up to date, and a file of a
// newer turnpath is refused rather than written into.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"modernc.org/sqlite" // the "sqlite" database/sql driver
	sqlite3 "modernc.org/sqlite/lib"
)

// migrations bring the schema from version i to i+1 (index i). Append only: a released
// migration is never changed, the next change is a new entry.
var migrations = []string{
	// 1: runs, the views of their targets, hops, responders, multipath links.
	`CREATE TABLE runs (
		id       INTEGER PRIMARY KEY AUTOINCREMENT,
		kind     TEXT NOT NULL,          -- trace, multipath, monitor
		started  TEXT NOT NULL,          -- RFC 3339, UTC
		finished TEXT,
		version  TEXT NOT NULL,          -- turnpath's
		engine   TEXT NOT NULL DEFAULT '',
		proto    TEXT NOT NULL DEFAULT '',
		port     INTEGER NOT NULL DEFAULT 0,
		options  TEXT NOT NULL DEFAULT '{}', -- the report's options, JSON
		status   TEXT NOT NULL DEFAULT 'running', -- running, ok, not-reached, failed
		host     TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX runs_started ON runs(started);
	CREATE TABLE views (
		id           INTEGER PRIMARY KEY,
		run_id       INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
		seq          INTEGER NOT NULL DEFAULT 0, -- monitor: the interval's number
		time         TEXT NOT NULL,
		name         TEXT NOT NULL DEFAULT '',
		address      TEXT NOT NULL,
		source       TEXT NOT NULL DEFAULT '',
		reached      INTEGER NOT NULL,
		dest_ttl     INTEGER NOT NULL DEFAULT 0, -- 0: unknown
		dest_ttl_max INTEGER NOT NULL DEFAULT 0, -- multipath: branches of unequal length
		sent         INTEGER NOT NULL DEFAULT 0,
		path_loss    REAL                        -- NULL: unknown
	);
	CREATE INDEX views_address ON views(address, run_id);
	CREATE INDEX views_run ON views(run_id);
	CREATE TABLE hops (
		id       INTEGER PRIMARY KEY,
		view_id  INTEGER NOT NULL REFERENCES views(id) ON DELETE CASCADE,
		ttl      INTEGER NOT NULL,
		sent     INTEGER NOT NULL DEFAULT 0,
		received INTEGER NOT NULL DEFAULT 0,
		loss     REAL,    -- percent; NULL: not measured (multipath)
		forward  REAL,    -- monitor: forward and reply loss, percent
		reply    REAL,
		rtt_min  REAL,    -- milliseconds; NULL: no answer
		rtt_avg  REAL,
		rtt_max  REAL,
		jitter   REAL
	);
	CREATE TABLE responders (
		hop_id  INTEGER NOT NULL REFERENCES hops(id) ON DELETE CASCADE,
		address TEXT NOT NULL,
		count   INTEGER NOT NULL DEFAULT 0,
		rtt_avg REAL
	);
	CREATE TABLE links (
		view_id   INTEGER NOT NULL REFERENCES views(id) ON DELETE CASCADE,
		from_node TEXT NOT NULL,
		to_node   TEXT NOT NULL,
		flows     INTEGER NOT NULL DEFAULT 0,
		ttls      TEXT NOT NULL DEFAULT ''
	);`,
	// 2: the AS number of a responder (filled in once turnpath looks them up), and the
	// indexes the history queries and the retention's cascades need.
	`ALTER TABLE responders ADD COLUMN asn INTEGER;
	CREATE INDEX hops_view ON hops(view_id);
	CREATE INDEX responders_hop ON responders(hop_id);
	CREATE INDEX links_view ON links(view_id);`,
}

// SchemaVersion is the version this turnpath writes.
func SchemaVersion() int { return len(migrations) }

// Store is an open history file.
type Store struct {
	db   *sql.DB
	path string
}

// ErrNotExist: the store's file does not exist (only when opened for reading).
var ErrNotExist = errors.New("no such store")

// SchemaError is a file turnpath cannot use: not a turnpath store, or a newer one.
type SchemaError struct {
	Path string
	Msg  string
}

func (e *SchemaError) Error() string { return e.Path + ": " + e.Msg }

// Open opens the store at path, creating it when create is set (else a missing file is
// ErrNotExist), and migrates it to SchemaVersion.
func Open(ctx context.Context, path string, create bool) (*Store, error) {
	if path == "" {
		return nil, errors.New("open store: empty path")
	}
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.IsDir():
		return nil, fmt.Errorf("open store %s: is a directory", path)
	case errors.Is(err, fs.ErrNotExist) && !create:
		return nil, fmt.Errorf("open store %s: %w", path, ErrNotExist)
	case errors.Is(err, fs.ErrNotExist):
		if d, err := os.Stat(filepath.Dir(path)); err != nil || !d.IsDir() {
			return nil, fmt.Errorf("open store %s: directory %s does not exist", path, filepath.Dir(path))
		}
	case err != nil:
		return nil, fmt.Errorf("open store %s: %w", path, err)
	default:
		f, err := os.Open(path) // a file we may not even read: say so, not SQLite's "unable to open"
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
		f.Close()
	}
	// The busy timeout makes two runs recording at once (or history reading while a run
	// records) take turns instead of failing, and immediate transactions take the write
	// lock at BEGIN, where the busy timeout applies (a deferred one upgrading later could
	// fail at once). The rollback journal, not WAL: a WAL file cannot be read by a user
	// who may not write its directory (history of a root cron job), and the writes here
	// are short.
	q := url.Values{"_txlock": {"immediate"}}
	for _, p := range []string{"foreign_keys(1)", "busy_timeout(10000)"} {
		q.Add("_pragma", p)
	}
	if !create {
		q.Set("mode", "rw")
	}
	s, err := connect(path, q)
	if err == nil {
		err = s.migrate(ctx, len(migrations))
	}
	if err != nil && !create && readOnly(err) {
		// Someone else's store, readable but not writable (history of a root cron job
		// read by a user): read it as it is, if it needs no migration.
		if s != nil {
			s.Close()
		}
		s, err = connect(path, url.Values{"mode": {"ro"}, "_pragma": {"busy_timeout(10000)"}})
		if err == nil {
			err = s.checkReadOnly(ctx)
		}
	}
	if err != nil {
		if s != nil {
			s.Close()
		}
		if readOnly(err) {
			return nil, fmt.Errorf("open store %s: %w (%s)", path, ErrReadOnly, sqliteMsg(err))
		}
		return nil, err
	}
	return s, nil
}

func connect(path string, q url.Values) (*Store, error) {
	db, err := sql.Open("sqlite", "file:"+escapePath(path)+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Store{db: db, path: path}, nil
}

// checkReadOnly accepts a store opened read-only only at this turnpath's version.
func (s *Store) checkReadOnly(ctx context.Context) error {
	v, err := s.version(ctx)
	switch {
	case err != nil:
		return err
	case v > len(migrations):
		return &SchemaError{s.path, fmt.Sprintf("schema version %d is newer than this turnpath's %d: use a newer turnpath", v, len(migrations))}
	case v < len(migrations):
		return &SchemaError{s.path, fmt.Sprintf("schema version %d needs migrating to %d, and the file is read-only here: open it once as its owner", v, len(migrations))}
	}
	return nil
}

// ErrReadOnly: the store may be read but not written.
var ErrReadOnly = errors.New("cannot write it")

// writeErr says what failed to be written, plainly when the file is read-only.
func (s *Store) writeErr(op string, err error) error {
	if readOnly(err) {
		return fmt.Errorf("%s in %s: %w (%s)", op, s.path, ErrReadOnly, sqliteMsg(err))
	}
	return fmt.Errorf("%s in %s: %w", op, s.path, err)
}

// readOnly reports an error that says the file may be read but not written (or not
// opened at all, for lack of permission).
func readOnly(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM:
		return true
	}
	return false
}

// escapePath keeps a path with '?' or '#' from being read as the URI's query.
func escapePath(p string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(p)
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Path is the store's file.
func (s *Store) Path() string { return s.path }

// version reads the schema version: 0 for a new, empty file.
func (s *Store) version(ctx context.Context) (int, error) {
	var tables int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table'`).Scan(&tables); err != nil {
		if readOnly(err) {
			return 0, err
		}
		return 0, &SchemaError{s.path, "not a turnpath store: " + sqliteMsg(err)}
	}
	var has int
	s.db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'`).Scan(&has)
	if has == 0 {
		if tables > 0 {
			return 0, &SchemaError{s.path, "not a turnpath store (an SQLite database without schema_version)"}
		}
		return 0, nil
	}
	var v int
	if err := s.db.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v); err != nil {
		return 0, &SchemaError{s.path, "not a turnpath store: schema_version: " + sqliteMsg(err)}
	}
	return v, nil
}

// migrate brings the file to version to (tests stop at older versions).
func (s *Store) migrate(ctx context.Context, to int) error {
	v, err := s.version(ctx)
	if err != nil {
		return err
	}
	if v > len(migrations) {
		return &SchemaError{s.path, fmt.Sprintf("schema version %d is newer than this turnpath's %d: use a newer turnpath", v, len(migrations))}
	}
	for range len(migrations) { // each step advances the version, or it fails
		if v >= to {
			return nil
		}
		if v, err = s.step(ctx, to); err != nil {
			return fmt.Errorf("migrate store %s to schema version %d: %w", s.path, v+1, err)
		}
	}
	return nil
}

// step applies the next migration and records the new version, in one transaction: a
// migration that fails leaves the file as it was. The version is read again inside the
// transaction (which holds the write lock): two runs opening a new or old store at once
// migrate it once. It returns the version the file is at.
func (s *Store) step(ctx context.Context, to int) (int, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	v := 0
	var has int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'`).Scan(&has); err != nil {
		return 0, err
	}
	if has > 0 {
		if err := tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v); err != nil {
			return 0, err
		}
	}
	if v >= to || v >= len(migrations) {
		return v, nil // another run got here first
	}
	if has == 0 {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE schema_version (version INTEGER NOT NULL)`); err != nil {
			return v, err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version VALUES (0)`); err != nil {
			return v, err
		}
	}
	if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
		return v, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, v+1); err != nil {
		return v, err
	}
	if err := tx.Commit(); err != nil {
		return v, err
	}
	return v + 1, nil
}

// sqliteMsg shortens the driver's error to its message.
func sqliteMsg(err error) string {
	m := err.Error()
	if i := strings.LastIndex(m, ": "); i >= 0 && strings.Contains(m, "SQLITE_") {
		m = m[i+2:]
	}
	// The driver appends the result code: "file is not a database (26)".
	if i := strings.LastIndex(m, " ("); i > 0 && strings.HasSuffix(m, ")") {
		if _, err := strconv.Atoi(m[i+2 : len(m)-1]); err == nil {
			m = m[:i]
		}
	}
	return m
}

// DeleteRun deletes one run with everything recorded for it.
func (s *Store) DeleteRun(ctx context.Context, id int64) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM runs WHERE id = ?`, id); err != nil {
		return s.writeErr("delete run "+strconv.FormatInt(id, 10), err)
	}
	return nil
}

// Prune deletes the runs that started before cutoff, with everything recorded for them,
// and returns how many.
func (s *Store) Prune(ctx context.Context, cutoff time.Time) (int, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM runs WHERE started < ?`, stamp(cutoff))
	if err != nil {
		return 0, s.writeErr("prune", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// stamp is how times are stored: RFC 3339 in UTC with fixed-width nanoseconds, so the
// text sorts in time order.
func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000000Z") }

func parseStamp(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}
