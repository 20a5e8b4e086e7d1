// Package mda discovers every path toward a target through per-flow load balancers: the
// Multipath Detection Algorithm (Augustin, Friedman, Teixeira, "Multipath tracing with
// Paris traceroute"; Veitch et al., "Failure control in multipath route tracing") in its
// MDA-Lite form (Vermeulen et al., "Multilevel MDA-Lite Paris traceroute", IMC 2018).
//
// It is pure: it thinks in (flow, TTL) probes sent in parallel batches through a Prober,
// and in the answering interfaces. A flow is a fixed 5-tuple whose source port is the flow
// id (Options.FlowBase + i), so per-flow ECMP keeps it on one path. The real Prober,
// EngineProber, runs the batches on a trace.Engine, paced by package pace; package mda/sim
// is a simulated network (ECMP hashing, silent routers, loss, ICMP rate limiting, a virtual
// clock) for tests and benchmarks. Run and RunMany (share.go) drive the exploration loop
// (explore.go: every (flow, TTL) probe with an explicit lifecycle), which asks the rules
// below (rules.go) what to send next. What a finished Graph says is here too: InferPaths
// (the distinct paths, hops filled in from the graph), Roles (diamonds) and NextHops.
//
// # Vertices
//
// A vertex is an interface address, whatever the TTL it shows at: with branches of unequal
// length the same router answers at several TTLs (the lab's r6 at 6 and 7), and every rule
// below counts a vertex's flows over all of them. A silent hop is a vertex too, keyed by
// the last answering interface before it and its depth after it ("*198.18.13.2+1"), so the
// same silent router reached by branches of unequal length is one vertex.
//
// With Options.Aliases (the default) a vertex is a router: the answers' IP IDs, reply
// TTLs and MPLS labels go to package alias as they come, and the interfaces it shows to
// be one router (a shared IP ID counter) are keyed by the router's ID, so a router that
// answers from the interface a probe came in by (IPv6; IPv4 with
// icmp_errors_use_inbound_ifaddr) counts its next hops once, and the branches converging
// on it do not look meshed. Interfaces that may still prove to be one (alias.Open: their
// counters fit so far, too few IDs yet) are keyed as one provisionally, for a round or
// two; once the rules want nothing more, the provisional groups are dropped and the rules
// look again at what is proven. The graph returned is still one of interfaces (measured
// as always, plus the links a router makes certain: Link.Alias), with the routers in
// Graph.Routers; Graph.RouterGraph folds it into one node per router. IPv6 answers carry
// no IP ID (nor do Linux's IPv4 ICMP errors, IP ID 0): there, once the exploration has
// seen rate limiting, interfaces that look like one router (equal reply TTLs, reached
// from different interfaces, leading to a common one) are keyed as one provisionally and
// tested at the end by the routers' ICMP rate limiters (ratealias.go: bursts that drain
// one address's budget, then the other's silence or not). Without rate limiting the test
// cannot tell: each interface stays a router of its own, and Graph.Unresolved says so.
//
// # Stopping rule
//
// Having seen k next hops of a vertex through n flows, the hypothesis "there is a
// (k+1)-th" is rejected once n >= n_k (StoppingPoints): 6, 11, 16, 21, 27... at 95%.
// Unanswered probes never count.
//
// # MDA-Lite, and where it escalates
//
// Every TTL of the path is explored in the same batches ("layers" t -> t+1):
//
//   - a layer whose near end is a single vertex (every flow goes through it): its next
//     hops are the vertices at t+1, so any flow probed at t+1 alone is a sample (no need to
//     know it at t); n_k flows with k the vertices seen at t+1;
//   - a layer with several vertices at t: flows onward must be known at t. The hop as a
//     whole gets the stopping rule (MDA-Lite's uniformity assumption), every vertex gets
//     one flow onward at every TTL (edge discovery) and two when both ends have several
//     vertices (the meshing test), every vertex at t+1 gets one flow measured at t too
//     (edge discovery backwards, which also exposes a vertex missed at t);
//   - escalation: a vertex seen to split (two or more next hops, where the layer has
//     several vertices) gets the per-vertex rule of full MDA, with node control: more
//     flows at t, preferably through its predecessors, until n_k of them went through it.
//     Graph.FullTTLs lists where. So does every vertex of a meshed layer (a vertex at
//     t+1 reached from several at t, one of which splits): the paths are not disjoint,
//     and one vertex's next hops tell nothing about another's. Routers answering from
//     their ingress interface make one router several vertices, all meshed onward,
//     unless alias resolution shows them one.
//     Options.Full applies the per-vertex rule everywhere
//     (classic MDA, as scamper's tracelb), for comparison and for networks known to
//     balance non-uniformly.
//
// After branches of unequal length converge, every vertex shows at several TTLs, and the
// hop rule would ask n_k flows at each of them. Where it is cheaper, the layer takes the
// per-vertex rule instead, counting a vertex's flows at every TTL (the stricter test: no
// uniformity assumed); more flows through a vertex are asked where they cost one probe
// each (flows known there, not probed one hop further), else by node control, which
// counts on pending flows from a predecessor that leads to the vertex.
//
// When the kernel's route to the target has a single next hop (not a multipath route:
// Options.OneFirstHop, from 'ip route get fibmatch'), every flow meets the same router at
// TTL 1, and one flow there is enough.
//
// The first batch probes n_1 flows at the first TTL and one flow at each of the next
// Options.Window TTLs; every batch then asks for what the rules lack at every TTL at once,
// and looks Window TTLs past the deepest answer until the destination answers.
//
// # Unanswered probes
//
// An unanswered probe is re-sent at once (Options.Retries), one flow per predecessor
// vertex at a time. What it means then depends on the other flows from the same vertex:
//
//   - none of them was ever answered, and nothing answers at that TTL: a silent router
//     (an anonymous vertex, and all such flows from that vertex are silent at once, at
//     every TTL: one probe per predecessor is re-sent, whatever its TTL). Until rate
//     limiting shows, probes past the same interface unanswered over two rounds, twice
//     the sends of one probe's re-sends, are evidence enough; and a re-send waits when
//     fresh probes past that interface go out anyway;
//   - nothing from that vertex answers, but other routers answer at the TTL: maybe a
//     rate-limited router (once any probe of the run was answered only when re-sent;
//     until then, silent after the re-sends, re-opened when rate limiting shows), so the
//     probe goes on trial: re-sent alone after a pause of
//     Options.RateLimitBackoff during which nothing else is sent (a Linux router then has
//     a token for it, whatever TTL it shows at), twice; unanswered, the router is silent;
//   - the vertex's next hop answers other flows (at this TTL or another): rate limiting
//     or loss. The probe is re-sent after exponential back-offs (1x, 2x, 4x, 8x
//     RateLimitBackoff...), while its TTL gets no new probes (they would take the budget
//     the router is refilling); after two back-offs it goes on trial as above, so a
//     silent router beside answering ones in an ECMP group is still found; after
//     Options.RateLimitRetries back-offs it is given up, counted nowhere.
//
// So missing answers never end the enumeration early: the rules ask for other flows.
//
// # Sharing between targets (RunMany)
//
// RunMany explores the targets in waves of 1, 2, 4 ... targets (up to Options.Parallel), the
// targets of a wave in the same rounds: each round is one batch with all their probes. It
// keeps, for every vertex whose next hops a finished wave established, that set. For the
// targets of later waves, the layers from
// the prober outward are taken from that knowledge as long as what n_1 flows of the new
// target show agrees with it (every vertex and link seen is a known one, and every vertex
// at the near end has known next hops); from the first layer where they differ (a new
// vertex or link, the new target's destination, a vertex without known next hops),
// exploration goes on as for Run, after enough flows at that TTL to see every vertex the
// knowledge expects there (the stopping rule for their number: the n_1 flows that followed
// the known layers may have missed one, whose branch would go unexplored). A prefix that
// agrees costs n_1 flows per TTL instead of
// the stopping rule's n_k; Graph.SharedTTLs lists the TTLs taken, and the graph holds the
// known vertices and links there (Shared). A vertex whose next hops differ between two
// targets (routes per destination) is never shared again. The assumption is doubletree's:
// a router's ECMP set is the same for the targets sharing the prefix; a target routed over
// a strict subset of a known set cannot be told apart with n_1 flows. The first target
// goes alone so that its prefix (the prober's own routers, at least) is known to all
// others; doubling keeps the waves, each a few rounds, to the logarithm of the list.
//
// The targets share the routers' ICMP budgets (Linux's are per destination of the error,
// the prober: one for its IPv4 address, one for its IPv6 address). Once a run sees rate
// limiting, the rest of its wave goes one target of each family at a time and later waves
// have one target of each family: several of one family at once would only spend the
// budgets the back-offs wait for, while the two families never spend each other's. A
// trial (see above) goes alone across its family's targets of the wave, its pause counted
// from the last probe of any of them. And with rate limiting seen, a probe unanswered one
// hop past an answering interface goes on trial even when nothing at its TTL answered
// yet: an earlier target may have spent the budget of the router there; and what an
// earlier target saw answer after a vertex counts as an answer there (the first router,
// probed once per target, would otherwise be called silent).
//
// # Joining a prefix's graph (Options.Join)
//
// With Join, RunMany explores only the first target of each prefix (IPv4 /24, IPv6 /64)
// with the rules above, and, when no router rate-limits, a second one, the two sharing
// the union of their graphs; every other target is probed backwards from its destination
// with one flow, at the TTLs the prefix's destination answered at and one before, and
// takes the prefix's graph when its destination answers there and the hop before it is
// one the graph has before the destination (see join.go). A target that does not join is
// explored in full. The assumption is doubletree's, made per prefix: routes are per
// prefix, so the routers' next-hop sets toward every target of one are the same.
//
// # Limits
//
//   - MDA-Lite assumes uniform, memoryless load balancing where it does not escalate: a
//     vertex with a hidden second next hop in a converging layer (nested diamonds) is found
//     with less than the stated confidence.
//   - The confidence is per vertex (per hypothesis test), as in the papers and scamper: a
//     path with several load balancers misses one of them more often than 1 - c.
//   - Per-packet load balancing and route changes during the run are not detected.
//   - Two silent routers after the same answering interface at the same depth are one
//     anonymous vertex.
package mda
