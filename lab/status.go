package lab

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"
)

// NamespaceStatus is one namespace of a lab.
type NamespaceStatus struct {
	Name    string
	Present bool
}

// ProcessStatus is one process of a lab.
type ProcessStatus struct {
	Name  string // "coturn-wildcard", "dnsmasq"
	NS    string
	PID   int
	Alive bool // running and still the process we started
	Log   string
}

// LabStatus is what Status found. It needs no privileges.
type LabStatus struct {
	Prefix     string
	Profile    string // "" if no state was recorded
	Complete   bool   // Up finished
	Created    time.Time
	Namespaces []NamespaceStatus
	Processes  []ProcessStatus
	topo       *Topology
}

// Status inspects the lab with this prefix. The error is only for an unreadable state
// or a bad prefix; whether the lab is up is in the result (Up, Err).
func Status(prefix string) (*LabStatus, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("lab status: %w", err)
	}
	st, err := readState(prefix)
	if err != nil {
		return nil, fmt.Errorf("lab status: %w", err)
	}
	s := &LabStatus{Prefix: prefix, topo: DefaultTopology()}
	names := []string{}
	if st != nil {
		s.Profile, s.Complete, s.Created = st.Profile, st.Complete, st.Created
		names = st.Namespaces
		for _, p := range st.Processes {
			s.Processes = append(s.Processes, ProcessStatus{Name: p.Name, NS: NSName(prefix, p.Node), PID: p.PID, Alive: isOurs(p), Log: p.Log})
		}
	}
	if len(names) == 0 {
		for _, n := range s.topo.Nodes {
			names = append(names, NSName(prefix, n.Name))
		}
	}
	for _, n := range names {
		s.Namespaces = append(s.Namespaces, NamespaceStatus{Name: n, Present: nsExists(n)})
	}
	return s, nil
}

// Up reports whether the lab is complete and healthy.
func (s *LabStatus) Up() bool { return s.Err() == nil }

// Err says why the lab is not up, or returns nil. Nothing at all is ErrNotUp.
func (s *LabStatus) Err() error {
	var missing []error
	present := 0
	for _, n := range s.Namespaces {
		if n.Present {
			present++
		} else {
			missing = append(missing, fmt.Errorf("namespace %s missing", n.Name))
		}
	}
	if s.Profile == "" && present == 0 {
		return &notUpError{s.Prefix}
	}
	for _, p := range s.Processes {
		if !p.Alive {
			missing = append(missing, fmt.Errorf("%s (pid %d) not running", p.Name, p.PID))
		}
	}
	if !s.Complete {
		missing = append([]error{fmt.Errorf("lab %s is %w (run 'turnpath lab down --prefix %s')", s.Prefix, ErrPartial, s.Prefix)}, missing...)
	} else if len(missing) > 0 {
		missing = append([]error{fmt.Errorf("lab %s is unhealthy (run 'turnpath lab down --prefix %s' and up again)", s.Prefix, s.Prefix)}, missing...)
	}
	return joinErrors(missing...)
}

// Print writes a human-readable report.
func (s *LabStatus) Print(w io.Writer) {
	state := "up"
	if err := s.Err(); err != nil {
		switch {
		case s.Profile == "":
			state = "NOT UP"
		case !s.Complete:
			state = "PARTIAL (lab up did not finish)"
		default:
			state = "DEGRADED"
		}
	}
	fmt.Fprintf(w, "lab %s: %s", s.Prefix, state)
	if s.Profile != "" {
		fmt.Fprintf(w, " (profile %s, since %s)", s.Profile, s.Created.Local().Format(time.DateTime))
	}
	fmt.Fprintln(w)
	var present, missing []string
	for _, n := range s.Namespaces {
		if n.Present {
			present = append(present, n.Name)
		} else {
			missing = append(missing, n.Name)
		}
	}
	if len(present) == 0 {
		fmt.Fprintf(w, "namespaces: none of %d present\n", len(s.Namespaces))
	} else {
		fmt.Fprintf(w, "namespaces: %d/%d present: %s\n", len(present), len(s.Namespaces), strings.Join(present, " "))
	}
	if len(missing) > 0 && len(present) > 0 {
		fmt.Fprintf(w, "  missing: %s\n", strings.Join(missing, " "))
	}
	if s.Profile == "" && len(present) == 0 {
		return
	}
	fmt.Fprintln(w, "processes:")
	for _, p := range s.Processes {
		alive := "running"
		if !p.Alive {
			alive = "NOT RUNNING"
		}
		fmt.Fprintf(w, "  %-16s pid %-7d in %-12s %s (log %s)\n", p.Name, p.PID, p.NS, alive, p.Log)
	}
	t := s.topo
	ci := t.Ifaces(t.Client())[0]
	fmt.Fprintf(w, "client: netns %s, dev %s, %s %s (no default route; lab space via r1)\n",
		NSName(s.Prefix, t.Client()), ci.Name, ci.Addr4.Addr(), ci.Addr6.Addr())
	fmt.Fprintf(w, "resolver: %s (PTR names <node>-link<N>.%s)\n", joinAddrs(t.ResolverAddrs()), t.Domain)
	fmt.Fprintln(w, "target groups:")
	for _, g := range t.Groups {
		tr, _ := DefaultTruth().TargetTruth(g.Targets()[0])
		desc := "coturn bound to each address, answers from the probed address"
		if g.Mode == ModeWildcard {
			desc = fmt.Sprintf("one coturn on the wildcard address, answers from %s", tr.STUNReplyFrom())
		}
		fmt.Fprintf(w, "  %-9s on %s: %s, %s (%d targets, udp/%d, reached at TTL %v); %s\n",
			g.Name, g.Node, rangeOf(g, IPv4), rangeOf(g, IPv6), len(g.Targets()), t.Port, tr.ReachedAt(), desc)
	}
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, " ")
}

// rangeOf is "first-last" of a group's targets of one family.
func rangeOf(g Group, f Family) string {
	var fam []netip.Addr
	for _, a := range g.Targets() {
		if FamilyOf(a) == f {
			fam = append(fam, a)
		}
	}
	if len(fam) == 0 {
		return "-"
	}
	return fmt.Sprintf("%s-%s", fam[0], fam[len(fam)-1])
}
