package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/turnpath/turnpath/monitor"
	"github.com/turnpath/turnpath/report"
	"github.com/turnpath/turnpath/trace"
	"golang.org/x/sys/unix"
)

// The live view of `turnpath monitor`: on a terminal (and without --report or another
// --format) the hop table of one target updates in place every round, as mtr's curses
// view does. The run itself is monitor.Run in its own goroutine; the view only reads the
// snapshots it hands over after each round (monitor.Options.Snapshot), the newest one
// winning, so a slow terminal never holds the rounds up. On quit the terminal is
// restored (alt screen) and the caller prints the final report.

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// liveInfo is what the view shows besides the snapshots.
type liveInfo struct {
	targets  *targetList
	source   func(i int) netip.Addr
	engine   string
	interval time.Duration
	metrics  *monitorMetrics // --listen, --textfile (nil: none)
	// resolve looks names of addrs up (blocking, at most the name timeout) and returns
	// the lookup; nil without name lookups (-n).
	resolve func(addrs []netip.Addr) func(netip.Addr) string
}

type snapMsg *monitor.Snapshot

type runDoneMsg struct{}

type namesMsg struct{ name func(netip.Addr) string }

type liveModel struct {
	info  liveInfo
	snaps <-chan *monitor.Snapshot
	done  <-chan struct{}
	reset chan<- struct{}

	latest, shown *monitor.Snapshot
	cur           int
	paused        bool
	all           bool // every responder of a hop, not only the most frequent
	addrs         bool // addresses instead of names
	resetNote     time.Time

	name      func(netip.Addr) string
	asked     map[netip.Addr]bool // names looked up or being looked up
	resolving bool
	width     int
}

// runMonitorLive runs the monitor under the live view until the rounds are done, ctx is
// cancelled, or the user quits; it returns what monitor.Run returned.
func runMonitorLive(ctx context.Context, out io.Writer, eng trace.Engine, n int, opts monitor.Options, info liveInfo) (*monitor.Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	snaps := make(chan *monitor.Snapshot, 1)
	reset := make(chan struct{}, 1)
	opts.Reset = reset
	opts.SnapshotEvery = min(opts.Interval, 50*time.Millisecond)
	also := opts.Snapshot // --store's recorder
	opts.Snapshot = func(s *monitor.Snapshot) {
		if also != nil {
			also(s)
		}
		// The newest snapshot replaces one the view has not taken yet.
		select {
		case snaps <- s:
		default:
			select {
			case <-snaps:
			default:
			}
			select {
			case snaps <- s:
			default:
			}
		}
	}
	info.metrics.apply(&opts)
	done := make(chan struct{})
	var res *monitor.Result
	var runErr error
	go func() {
		defer close(done)
		res, runErr = monitor.Run(ctx, eng, n, opts)
	}()
	m := &liveModel{info: info, snaps: snaps, done: done, reset: reset, asked: map[netip.Addr]bool{}}
	// No signal handler of bubbletea's: main's context already turns SIGINT and SIGTERM
	// into the end of the run, which ends the view (runDoneMsg). Both at once hang
	// bubbletea v1.3.10's shutdown (its handler blocks sending to a stopped event loop).
	p := tea.NewProgram(m, tea.WithAltScreen(), tea.WithOutput(out), tea.WithoutSignalHandler())
	_, err := p.Run()
	cancel() // the user quit (or the run ended): stop the rounds
	<-done
	if err != nil && res == nil {
		return nil, fmt.Errorf("live view: %w", err)
	}
	return res, runErr
}

func (m *liveModel) Init() tea.Cmd { return m.wait() }

// wait takes the next snapshot, or notes the end of the run.
func (m *liveModel) wait() tea.Cmd {
	return func() tea.Msg {
		select {
		case s := <-m.snaps:
			return snapMsg(s)
		case <-m.done:
			return runDoneMsg{}
		}
	}
}

func (m *liveModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case snapMsg:
		m.latest = msg
		if !m.paused {
			m.shown = m.latest
		}
		return m, tea.Batch(m.wait(), m.lookup())
	case runDoneMsg:
		return m, tea.Quit
	case namesMsg:
		m.name, m.resolving = msg.name, false
		return m, m.lookup()
	case tea.WindowSizeMsg:
		m.width = msg.Width
	case tea.KeyMsg:
		n := len(m.info.targets.addrs)
		switch msg.String() {
		case "q", "ctrl+c", "esc":
			return m, tea.Quit
		case "n", "tab", "right", "down", "j":
			m.cur = (m.cur + 1) % n
		case "p", "shift+tab", "left", "up", "k":
			m.cur = (m.cur + n - 1) % n
		case " ":
			m.paused = !m.paused
			if !m.paused {
				m.shown = m.latest
			}
		case "r":
			select {
			case m.reset <- struct{}{}:
			default:
			}
			m.resetNote = time.Now()
		case "a":
			m.all = !m.all
		case "d":
			m.addrs = !m.addrs
		}
	}
	return m, nil
}

// lookup starts a name lookup of the responders not looked up yet (one at a time).
func (m *liveModel) lookup() tea.Cmd {
	if m.info.resolve == nil || m.resolving || m.latest == nil {
		return nil
	}
	var addrs []netip.Addr
	for _, t := range m.latest.Targets {
		for _, h := range t.Hops {
			for _, r := range h.Responders {
				if !m.asked[r.Addr] {
					m.asked[r.Addr] = true
					addrs = append(addrs, r.Addr)
				}
			}
		}
	}
	if len(addrs) == 0 {
		return nil
	}
	m.resolving = true
	resolve := m.info.resolve
	return func() tea.Msg { return namesMsg{resolve(addrs)} }
}

func (m *liveModel) host(a netip.Addr) string {
	if !m.addrs && m.name != nil {
		if n := m.name(a); n != "" {
			return n
		}
	}
	return a.String()
}

func (m *liveModel) View() string {
	var b strings.Builder
	tl := m.info.targets
	i := m.cur
	rounds := 0
	if m.shown != nil {
		rounds = m.shown.Rounds
	}
	fmt.Fprintf(&b, "turnpath monitor to %s (%s) from %s   target %d/%d   round %d every %v   engine %s",
		tl.name(i), tl.addrs[i], m.info.source(i), i+1, len(tl.addrs), rounds, m.info.interval, m.info.engine)
	if m.paused {
		b.WriteString("   [paused]")
	}
	if time.Since(m.resetNote) < 2*time.Second {
		b.WriteString("   [statistics reset]")
	}
	b.WriteString("\n")
	b.WriteString("keys: n/p/tab target  space pause  r reset  a all responders  d names/addresses  q quit\n\n")
	b.WriteString(report.MonitorHeader(hostWidth))
	if m.shown == nil || i >= len(m.shown.Targets) {
		b.WriteString("waiting for the first round…\n")
		return b.String()
	}
	if d := m.shown.Down; d != nil {
		fmt.Fprintf(&b, "OUTAGE since %s: %s: waiting for the way out to come back…\n",
			d.Start.Format(time.TimeOnly), d.Cause)
	}
	t := m.shown.Targets[i]
	for _, hs := range t.Hops {
		h := report.MonitorHopOf(hs, nil)
		if h.Silent || h.RateLimited {
			b.WriteString(report.MonitorRow(h, "", hostWidth))
			continue
		}
		for k, r := range h.Responders {
			host := m.host(r.Addr)
			if len(h.Responders) > 1 {
				host += fmt.Sprintf(" %.0f%%", 100*r.Share)
				if !m.all && k == 0 {
					host += fmt.Sprintf(" (+%d)", len(h.Responders)-1)
				}
			}
			host = clip(host, hostWidth)
			if k > 0 {
				if !m.all {
					break
				}
				fmt.Fprintf(&b, "     %s\n", host)
				continue
			}
			b.WriteString(report.MonitorRow(h, host, hostWidth))
		}
	}
	b.WriteString("\n")
	if t.PathLossKnown {
		fmt.Fprintf(&b, "path loss %.1f%% (the destination's own answers)", t.PathLoss)
	} else {
		b.WriteString("path loss unknown: the destination has not answered")
	}
	if t.Events > 0 {
		fmt.Fprintf(&b, "   path changes %d", t.Events)
	}
	b.WriteString("\n")
	return b.String()
}

// hostWidth is the live view's host column: names are clipped to it.
const hostWidth = 40

// clip shortens s to n runes.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
