package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/turnpath/turnpath/store"
	"github.com/urfave/cli/v2"
)

// storeEnv names the store when --store is not given, so a crontab sets it once.
const storeEnv = "TURNPATH_STORE"

// HistorySchema names the JSON document of `history --format json`.
const HistorySchema = "turnpath.history/v1"

func historyCommand() *cli.Command {
	return &cli.Command{
		Name:      "history",
		Usage:     "list the runs recorded with --store and the path changes between them",
		ArgsUsage: "[TARGET] (or --diff RUN RUN)",
		Description: "Reads the history that trace, multipath and monitor record with --store PATH and lists its\n" +
			"runs (of TARGET only, an address or name as given) and what changed on each target's path\n" +
			"from one run to the next of the same command, protocol and port: a hop that appeared,\n" +
			"vanished or changed address, a new or lost ECMP branch, the destination's distance, the\n" +
			"target reached or not, AS numbers (once recorded), and RTT or loss moving by the\n" +
			"thresholds or more. --diff RUN RUN compares two runs. Exit 0, 2 for bad input (a missing,\n" +
			"corrupt or newer store), 3 for runtime errors.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "store", EnvVars: []string{storeEnv}, Usage: "the history's SQLite `PATH`"},
			&cli.BoolFlag{Name: "diff", Usage: "compare two runs: turnpath history --diff RUN RUN"},
			&cli.StringFlag{Name: "keep", Usage: "first delete runs older than `AGE` (30d, 2w, 12h)"},
			&cli.IntFlag{Name: "last", Usage: "only the last `N` runs (and the changes among them)"},
			&cli.Float64Flag{Name: "rtt-shift", Value: store.DefaultThresholds.RTTMS, Usage: "a hop's average RTT moving by `MS` or more is a change (0: off)"},
			&cli.Float64Flag{Name: "loss-shift", Value: store.DefaultThresholds.LossPct, Usage: "a hop's loss moving by `PCT` points or more is a change (0: off)"},
			&cli.StringFlag{Name: "format", Value: "text", Usage: "text or json (schema " + HistorySchema + ")"},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "the error line as text, or json"},
		},
		Action: runHistory,
	}
}

type historyDoc struct {
	Schema  string         `json:"schema"`
	Version string         `json:"turnpath_version"`
	Store   string         `json:"store"`
	Target  string         `json:"target,omitempty"`
	Deleted int            `json:"deleted,omitempty"` // --keep
	Runs    []historyRun   `json:"runs"`
	Diff    []int64        `json:"diff,omitempty"` // --diff: the two runs
	Changes []store.Change `json:"changes"`
	// Only: --diff, the targets only one of the two runs has, by run.
	Only map[string][]string `json:"only,omitempty"`
}

type historyRun struct {
	ID       int64      `json:"run"`
	Command  string     `json:"command"`
	Started  time.Time  `json:"started"`
	Finished *time.Time `json:"finished,omitempty"` // absent: the run never ended (killed)
	Status   string     `json:"status"`
	Targets  int        `json:"targets"`
	Engine   string     `json:"engine"`
	Proto    string     `json:"proto"`
	Port     int        `json:"port"`
	Version  string     `json:"turnpath_version"`
	Host     string     `json:"host,omitempty"`
}

func runHistory(c *cli.Context) error {
	path, format := c.String("store"), c.String("format")
	logMode.command, logMode.json = "history", c.String("log-format") == "json"
	if lf := c.String("log-format"); lf != "text" && lf != "json" {
		return usageError("history: unknown --log-format %q (text, json)", lf)
	}
	if path == "" {
		return usageError("history: no store (--store PATH or %s)", storeEnv)
	}
	if format != "text" && format != "json" {
		return usageError("history: unknown --format %q (text, json)", format)
	}
	if err := finiteFlags(c); err != nil {
		return usageError("history: %w", err)
	}
	th := store.Thresholds{RTTMS: c.Float64("rtt-shift"), LossPct: c.Float64("loss-shift")}
	if th.RTTMS < 0 || th.LossPct < 0 || th.LossPct > 100 {
		return usageError("history: --rtt-shift and --loss-shift must be at least 0 (loss at most 100)")
	}
	var ids []int64
	target := ""
	if c.Bool("diff") {
		if c.NArg() != 2 {
			return usageError("history: --diff wants two run numbers: turnpath history --diff RUN RUN")
		}
		for _, a := range c.Args().Slice() {
			id, err := strconv.ParseInt(a, 10, 64)
			if err != nil || id <= 0 {
				return usageError("history: --diff: %q is not a run number", a)
			}
			ids = append(ids, id)
		}
	} else if c.NArg() > 1 {
		return usageError("history: one TARGET at most (got %d)", c.NArg())
	} else {
		target = c.Args().First()
	}
	if c.Int("last") < 0 {
		return usageError("history: --last %d: want a number of runs (0: all)", c.Int("last"))
	}
	var keep time.Duration
	if k := c.String("keep"); k != "" {
		var err error
		if keep, err = parseAge(k); err != nil {
			return usageError("history: --keep %w", err)
		}
	}

	ctx := c.Context
	st, err := store.Open(ctx, path, false)
	if err != nil {
		return usageError("history: %w", err)
	}
	defer st.Close()
	doc := historyDoc{Schema: HistorySchema, Version: version, Store: path, Target: target, Diff: ids, Changes: []store.Change{}}
	if keep > 0 {
		if doc.Deleted, err = st.Prune(ctx, time.Now().Add(-keep)); errors.Is(err, store.ErrReadOnly) {
			return usageError("history: --keep: %w", err)
		} else if err != nil {
			return runtimeError(fmt.Errorf("history: %w", err))
		}
	}
	filter := store.Filter{Target: target, IDs: ids, Limit: c.Int("last")}
	runs, err := st.Runs(ctx, filter)
	if err != nil {
		return runtimeError(fmt.Errorf("history: %w", err))
	}
	for _, r := range runs {
		doc.Runs = append(doc.Runs, historyRunOf(r))
	}
	if doc.Runs == nil {
		doc.Runs = []historyRun{}
	}
	if ids != nil {
		if err := diffRuns(c, st, ids, runs, th, &doc); err != nil {
			return err
		}
	} else {
		views, err := st.Views(ctx, filter)
		if err != nil {
			return runtimeError(fmt.Errorf("history: %w", err))
		}
		doc.Changes = append(doc.Changes, store.Changes(views, th)...)
	}
	if format == "json" {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		err = enc.Encode(doc)
	} else {
		err = writeHistoryText(c.App.Writer, &doc)
	}
	if err != nil {
		return runtimeError(fmt.Errorf("history: write output: %w", err))
	}
	return nil
}

func historyRunOf(r store.Run) historyRun {
	h := historyRun{ID: r.ID, Command: r.Kind, Started: r.Started, Status: r.Status, Targets: r.Targets,
		Engine: r.Engine, Proto: r.Proto, Port: r.Port, Version: r.Version, Host: r.Host}
	if !r.Finished.IsZero() {
		f := r.Finished
		h.Finished = &f
	}
	return h
}

// diffRuns compares the views of two runs target by target (by address; a monitor run's
// last interval stands for it), whatever their command.
func diffRuns(c *cli.Context, st *store.Store, ids []int64, runs []store.Run, th store.Thresholds, doc *historyDoc) error {
	for _, id := range ids {
		found := false
		for _, r := range runs {
			found = found || r.ID == id
		}
		if !found {
			return usageError("history: --diff: no run %d in %s", id, st.Path())
		}
	}
	last := [2]map[string]store.View{{}, {}}
	for k, id := range ids {
		views, err := st.Views(c.Context, store.Filter{IDs: []int64{id}})
		if err != nil {
			return runtimeError(fmt.Errorf("history: %w", err))
		}
		for _, v := range views {
			last[k][v.Address] = v
		}
	}
	doc.Only = map[string][]string{}
	first, second := strconv.FormatInt(ids[0], 10), strconv.FormatInt(ids[1], 10)
	for addr, a := range last[0] {
		b, ok := last[1][addr]
		if !ok {
			doc.Only[first] = append(doc.Only[first], addr)
			continue
		}
		doc.Changes = append(doc.Changes, store.Diff(&a, &b, th)...)
	}
	for addr := range last[1] {
		if _, ok := last[0][addr]; !ok {
			doc.Only[second] = append(doc.Only[second], addr)
		}
	}
	for _, addrs := range doc.Only {
		slices.Sort(addrs)
	}
	if len(doc.Only) == 0 {
		doc.Only = nil
	}
	sortChanges(doc.Changes)
	return nil
}

// sortChanges orders a diff's changes by target, then TTL (map order is random).
func sortChanges(cs []store.Change) {
	slices.SortStableFunc(cs, func(a, b store.Change) int {
		return cmp.Or(strings.Compare(a.Target, b.Target), cmp.Compare(a.TTL, b.TTL))
	})
}

func writeHistoryText(w io.Writer, doc *historyDoc) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	what := ""
	if doc.Target != "" {
		what = " with " + doc.Target
	}
	if doc.Deleted > 0 {
		fmt.Fprintf(tw, "deleted %d runs older than --keep\n", doc.Deleted)
	}
	fmt.Fprintf(tw, "%d runs%s in %s\n", len(doc.Runs), what, doc.Store)
	if len(doc.Runs) > 0 {
		fmt.Fprintln(tw, "run\tstarted (UTC)\tcommand\tstatus\ttargets\tengine\tproto/port\tturnpath")
	}
	for _, r := range doc.Runs {
		status := r.Status
		if r.Finished == nil && status == store.StatusRunning {
			status = "unfinished"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s/%d\t%s\n", r.ID, r.Started.UTC().Format("2006-01-02 15:04:05"),
			r.Command, status, r.Targets, dash(r.Engine), r.Proto, r.Port, r.Version)
	}
	if doc.Diff != nil {
		fmt.Fprintf(tw, "\nrun %d -> run %d: %d changes\n", doc.Diff[0], doc.Diff[1], len(doc.Changes))
		for run, addrs := range doc.Only {
			fmt.Fprintf(tw, "only in run %s: %s\n", run, strings.Join(addrs, " "))
		}
	} else {
		fmt.Fprintf(tw, "\n%d path changes\n", len(doc.Changes))
	}
	if len(doc.Changes) > 0 {
		fmt.Fprintln(tw, "time (UTC)\trun\ttarget\tttl\tchange\twas\tnow")
	}
	for _, ch := range doc.Changes {
		run := fmt.Sprintf("%d (after %d)", ch.Run, ch.PrevRun)
		if ch.Seq > 0 {
			run = fmt.Sprintf("%d.%d (after %d.%d)", ch.Run, ch.Seq, ch.PrevRun, ch.PrevSeq)
		}
		target := ch.Target
		if ch.Name != "" && ch.Name != ch.Target {
			target = ch.Name + " " + ch.Target
		}
		ttl := "-"
		if ch.TTL > 0 {
			ttl = strconv.Itoa(ch.TTL)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ch.Time.UTC().Format("2006-01-02 15:04:05"), run, target, ttl,
			ch.Kind, addrList(ch.Old), addrList(ch.New))
	}
	return tw.Flush()
}

func addrList(s []string) string {
	if len(s) == 0 {
		return "*" // silent, as trace prints it
	}
	return strings.Join(s, ",")
}
