package mda

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/turnpath/turnpath/alias"
	"github.com/turnpath/turnpath/probe"
)

// Request is one probe: flow Flow (the UDP source port; every other field of the 5-tuple is
// fixed) with TTL TTL toward target Target (an index into the targets the Prober was built
// for; always 0 for Run).
type Request struct {
	Target int    `json:"target"`
	Flow   uint16 `json:"flow"`
	TTL    uint8  `json:"ttl"`
}

// Answer is what came back for one Request. An unanswered request may be left out of the
// answers or returned with an invalid From.
type Answer struct {
	Request
	From netip.Addr    `json:"from,omitzero"` // the responding interface; invalid = no answer
	RTT  time.Duration `json:"rtt"`
	Dest bool          `json:"dest,omitempty"` // the destination answered (the probe got there)
	// Unreachable: a router answered with an ICMP error other than Time Exceeded (net or
	// host unreachable, administratively prohibited): the flow ends at From without
	// reaching the destination.
	Unreachable bool   `json:"unreachable,omitempty"`
	NAT         string `json:"nat,omitempty"` // NAT hint for the hop (see DESIGN.md), passed through
	// Kind is what answered (a router's Time Exceeded, the destination's STUN answer, ...).
	Kind probe.Kind `json:"-"`
	// What alias resolution compares (package alias): when the answer arrived, the
	// reply's own IPv4 IP ID (HasIPID), its TTL as received, and the MPLS labels it
	// quoted (RFC 4950), top first.
	At       time.Time `json:"-"`
	IPID     uint16    `json:"-"`
	HasIPID  bool      `json:"-"`
	ReplyTTL uint8     `json:"-"`
	MPLS     []uint32  `json:"-"`
}

// Prober sends a batch of probes in parallel and returns once every one is answered or its
// wait is over. Answers that come later are lost; the algorithm re-sends what it needs.
// Implementations: the trace.Engine adapter (later) and sim.Network.
type Prober interface {
	Probe(ctx context.Context, reqs []Request) ([]Answer, error)
}

// Options tune a run. Start from DefaultOptions.
type Options struct {
	// Confidence, in percent (0 < c < 100), that an interface's next hops are all found:
	// it sets the stopping points (see StoppingPoints). Default 95.
	Confidence float64
	FirstTTL   int // first TTL probed (1..255); default 1
	MaxTTL     int // last TTL probed (FirstTTL..255); default 30
	// MaxFlows bounds the flows (source ports) used per target; FlowBase+MaxFlows-1 <= 65535.
	MaxFlows int
	// MaxProbes bounds the probes sent per target, retries included.
	MaxProbes int
	// FlowBase is the first source port; flow i uses FlowBase+i. Default 50000.
	FlowBase uint16
	// Retries is how many times an unanswered probe is re-sent at once (one flow per
	// predecessor vertex at a time) before anything is concluded from it. Default 2.
	Retries int
	// RateLimitBackoff is the first wait before re-sending a probe that went unanswered
	// while the next hop of its predecessor answers other flows (ICMP rate limiting:
	// Linux gives a burst of 6, then 1/s, per prober). The wait doubles on each re-send,
	// up to 8 times this; the probe's TTL gets no new probes meanwhile. It is also the
	// pause before a trial: a probe re-sent alone, nothing else in flight, to tell a
	// silent router from a rate-limited one (see the package documentation). Default
	// 1s. Unanswered probes never count toward the stopping rule.
	RateLimitBackoff time.Duration
	// RateLimitRetries bounds the re-sends after a back-off; then the probe is given up
	// (counted nowhere). 0 disables back-offs and trials. Default 8 (up to
	// 1+2+4+8*5 = 47 s of waiting, per probe).
	RateLimitRetries int
	// Window is how many TTLs past the deepest answering hop are probed at once (one
	// flow each) while the destination has not been reached. Default 5.
	Window int
	// MaxGap stops the exploration this many TTLs past the last answering router while
	// the destination has not answered. Default 5.
	MaxGap int
	// Parallel bounds how many targets RunMany explores at once: it goes in waves of 1,
	// 2, 4 ... targets up to this many, each wave inheriting what the earlier ones
	// established. 1 explores one target after the other (the most sharing). Default 32.
	Parallel int
	// Aliases resolves aliases from the replies as they come (package alias: IP ID
	// series, reply TTLs, MPLS labels; no extra probes) and applies the stopping rules
	// to routers: a router answering from several interfaces is one vertex, so the
	// branches converging on it do not look meshed. The graph stays one of interfaces,
	// with the routers in Graph.Routers. Default true.
	Aliases bool
	// Join (RunMany): targets of one prefix (IPv4 /24, IPv6 /64) share the graph
	// explored for the first of them; each other one is probed backwards from its
	// destination until its flow joins that graph, and explored in full only if it does
	// not (see join.go). Default false.
	Join bool
	// Full disables MDA-Lite: every interface gets the per-interface stopping rule with
	// node control (classic MDA, as scamper's tracelb). For comparison and for networks
	// known to balance non-uniformly.
	Full bool
	// OneFirstHop, when set, tells whether the prober's own route to a target (by its
	// index in RunMany; 0 for Run) has a single next hop, i.e. is not a multipath route.
	// Then every flow meets the same router at TTL 1, and one flow tells which, instead of
	// the n_1 flows the stopping rule would ask of the prober as a vertex. With
	// FirstTTL > 1 it is not used; nil means not known.
	OneFirstHop func(target int) bool
	// Now and Sleep are the clock; nil means the real one. Simulations pass a virtual
	// clock so rate-limit back-offs cost no real time.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

// DefaultOptions are the defaults documented on Options.
func DefaultOptions() Options {
	return Options{
		Confidence:       99,
		FirstTTL:         1,
		MaxTTL:           30,
		MaxFlows:         4096,
		MaxProbes:        50000,
		FlowBase:         50000,
		Retries:          2,
		RateLimitBackoff: time.Second,
		RateLimitRetries: 8,
		Window:           5,
		MaxGap:           5,
		Parallel:         32,
		Aliases:          true,
	}
}

// ErrConfidence is returned (wrapped) for a confidence outside (0, 100).
var ErrConfidence = errors.New("confidence must be in (0, 100) percent")

// Validate reports options a user could get wrong.
func (o *Options) Validate() error {
	switch {
	case !(o.Confidence > 0 && o.Confidence < 100):
		return fmt.Errorf("confidence %v: %w", o.Confidence, ErrConfidence)
	case o.FirstTTL < 1 || o.FirstTTL > 255:
		return fmt.Errorf("first TTL %d out of range 1..255", o.FirstTTL)
	case o.MaxTTL < o.FirstTTL || o.MaxTTL > 255:
		return fmt.Errorf("max TTL %d out of range %d..255", o.MaxTTL, o.FirstTTL)
	case o.MaxFlows < 1 || int(o.FlowBase)+o.MaxFlows-1 > 65535:
		return fmt.Errorf("max flows %d from source port %d: must be at least 1 and end at port 65535 or below", o.MaxFlows, o.FlowBase)
	case o.FlowBase == 0:
		return errors.New("flow base (first source port) must not be 0")
	case o.MaxProbes < 1:
		return fmt.Errorf("max probes %d must be positive", o.MaxProbes)
	case o.Retries < 0 || o.Retries > 20:
		return fmt.Errorf("retries %d out of range 0..20", o.Retries)
	case o.RateLimitRetries < 0 || o.RateLimitRetries > 50:
		return fmt.Errorf("rate-limit retries %d out of range 0..50", o.RateLimitRetries)
	case o.RateLimitBackoff < 0:
		return fmt.Errorf("rate-limit back-off %v must not be negative", o.RateLimitBackoff)
	case o.Window < 1:
		return fmt.Errorf("window %d must be at least 1", o.Window)
	case o.MaxGap < 1:
		return fmt.Errorf("max gap %d must be at least 1", o.MaxGap)
	case o.Parallel < 1:
		return fmt.Errorf("parallel %d must be at least 1", o.Parallel)
	}
	return nil
}

// Graph is the multipath topology toward one target. Every field is JSON-friendly;
// nodes are referred to by ID everywhere.
type Graph struct {
	Target     netip.Addr `json:"target,omitzero"`
	Mode       string     `json:"mode"` // "mda-lite" or "mda"
	Confidence float64    `json:"confidence"`
	// Nodes are the interfaces (and anonymous hops) seen, by first TTL then address.
	Nodes []Node `json:"nodes"`
	// Hops lists, per TTL, the nodes that answered (or were silent) at that TTL.
	Hops []Hop `json:"hops"`
	// Links join a node to the next one on some flow's path, whatever the TTLs.
	Links []Link `json:"links"`
	// Flows are the measured paths, one per flow id used.
	Flows []FlowPath `json:"flows"`
	// Diamonds are the load-balanced sections of the node graph.
	Diamonds []Diamond `json:"diamonds"`
	// Dest is the ID of the node that answered as the destination, "" if unreached.
	Dest    string `json:"dest,omitempty"`
	Reached bool   `json:"reached"`

	Sent     int           `json:"sent"`     // probes sent, retries included
	Answered int           `json:"answered"` // probes answered
	Rounds   int           `json:"rounds"`   // batches sent
	Duration time.Duration `json:"duration"` // on the run's clock (virtual in simulations)
	// FullTTLs are the TTLs whose interfaces got the per-interface (full MDA) rule because
	// their load balancing is meshed or non-uniform (every TTL when Options.Full).
	FullTTLs []int `json:"full_ttls,omitempty"`
	// SharedTTLs are the TTLs whose next hops were taken from an earlier target of RunMany.
	SharedTTLs []int `json:"shared_ttls,omitempty"`
	// Truncated says why the exploration stopped before the stopping rule was met
	// ("max-probes", "max-flows", "max-ttl"); "" when it was met.
	Truncated string `json:"truncated,omitempty"`
	// Routers are the routers that answered from several of the graph's interfaces
	// (alias sets, with Options.Aliases), by ID (the lowest address). Every other
	// interface is a router of its own.
	Routers []Router `json:"routers,omitempty"`
	// Unresolved are groups of interfaces that look like one router answering from the
	// interface a probe came in by (equal reply TTLs, reached from different interfaces,
	// leading to a common one) but that no evidence decided: no IP ID counter, and no
	// rate-limit test that could tell (routers that do not rate-limit, or a test that
	// was inconclusive). Evidence kind "unresolved" says why. Each interface stays a
	// router of its own in the graph.
	Unresolved []Router `json:"unresolved,omitempty"`
	// Level is "interface" (a node per interface; routers in Routers) or "router" (a
	// node per router: RouterGraph).
	Level string `json:"level,omitempty"`
	// JoinedFrom (Options.Join): the target whose explored graph this one shares. Its
	// hops before the destination were established by that target's probes (Shared);
	// this target's own probes measured its destination's distance and the hop before.
	JoinedFrom netip.Addr `json:"joined_from,omitzero"`
}

// Router is one router that answered from several interfaces.
type Router struct {
	ID         string   `json:"id"`         // its lowest address
	Interfaces []string `json:"interfaces"` // node IDs, ascending
	// Evidence: what showed the interfaces to be one router (package alias).
	Evidence   []alias.Evidence `json:"evidence"`
	Confidence float64          `json:"confidence"`
}

// Node is one interface, or one anonymous (silent) hop.
type Node struct {
	// ID is the address, or for an anonymous hop "*<after>+<depth>" (see AnonID).
	ID   string     `json:"id"`
	Addr netip.Addr `json:"addr,omitzero"` // invalid for an anonymous hop
	// Anonymous hops are keyed by the last answering interface before them (After, "" for
	// the prober itself) and how many silent hops follow it (Depth, 1 = right after).
	After string `json:"after,omitempty"`
	Depth int    `json:"depth,omitempty"`
	// TTLs at which the node was seen; more than one when branches of unequal length
	// lead to it.
	TTLs []int `json:"ttls"`
	Dest bool  `json:"dest,omitempty"`
	// Unreachable: flows end here with an ICMP error (no route onward, filtered).
	Unreachable bool          `json:"unreachable,omitempty"`
	Flows       int           `json:"flows"` // flows measured through it
	RTTMin      time.Duration `json:"rtt_min,omitempty"`
	RTTAvg      time.Duration `json:"rtt_avg,omitempty"`
	RTTMax      time.Duration `json:"rtt_max,omitempty"`
	NAT         string        `json:"nat,omitempty"`    // per-hop NAT hint, when the prober gives one
	Shared      bool          `json:"shared,omitempty"` // known only from an earlier target (RunMany)
	// Router is the ID of the router this interface belongs to, when it answered from
	// several (see Graph.Routers).
	Router string `json:"router,omitempty"`
	// Interfaces, in a router-level graph, are the interfaces of a router node.
	Interfaces []string `json:"interfaces,omitempty"`
	answers    int
}

// Hop is the set of nodes at one TTL.
type Hop struct {
	TTL   int      `json:"ttl"`
	Nodes []string `json:"nodes"`
}

// Link is an edge of the node graph.
type Link struct {
	From  string `json:"from"`
	To    string `json:"to"`
	Flows int    `json:"flows"` // flows measured on it (0 when Shared)
	// TTLs of the From end at which the link was measured.
	TTLs   []int `json:"ttls,omitempty"`
	Shared bool  `json:"shared,omitempty"` // taken from an earlier target (RunMany)
	// Alias: not measured by a flow but inferred from its router: From belongs to a
	// router whose other interfaces lead to To, and a router forwards by destination,
	// whatever interface a probe came in by.
	Alias bool `json:"alias,omitempty"`
}

// FlowPath is one flow's measured path.
type FlowPath struct {
	Flow uint16    `json:"flow"` // source port
	Hops []FlowHop `json:"hops"`
	// Dest is the TTL at which the destination answered this flow, 0 if it did not.
	Dest int `json:"dest,omitempty"`
}

// FlowHop is one measured hop of a flow.
type FlowHop struct {
	TTL  int    `json:"ttl"`
	Node string `json:"node"`
}

// Diamond is a load-balanced section: paths split at Divergence and meet again at
// Convergence (its immediate post-dominator in the node graph; "" if they never meet).
type Diamond struct {
	Divergence  string `json:"divergence"`
	Convergence string `json:"convergence,omitempty"`
	TTL         int    `json:"ttl"` // first TTL of the divergence node
	// MaxWidth is the most nodes at one distance from the divergence point.
	MaxWidth int `json:"max_width"`
	// MinLength and MaxLength are the shortest and longest path, in hops, from divergence
	// to convergence; they differ for branches of unequal length.
	MinLength int      `json:"min_length"`
	MaxLength int      `json:"max_length"`
	Nodes     []string `json:"nodes"` // the nodes strictly inside
}

// Unequal reports whether the diamond's branches have different lengths.
func (d Diamond) Unequal() bool { return d.MinLength != d.MaxLength }

// Node returns the node with the given ID.
func (g *Graph) Node(id string) (Node, bool) {
	for _, n := range g.Nodes {
		if n.ID == id {
			return n, true
		}
	}
	return Node{}, false
}

// AnonID is the node ID of the depth-th silent hop after the interface after (invalid:
// after the prober).
func AnonID(after netip.Addr, depth int) string {
	a := ""
	if after.IsValid() {
		a = after.String()
	}
	return fmt.Sprintf("*%s+%d", a, depth)
}
