// Package probe is turnpath's wire format (DESIGN.md), as pure functions over bytes:
//
//   - probe ids (ID) and flows (Flow, FlowTag): what a probe carries so the ICMP quote
//     brings it back, Paris style;
//   - packet building (Builder: UDP, ICMP echo and TCP SYN over IPv4 and IPv6, checksums)
//     and UDP payloads (Payload: STUN, TURN, MS-TURN, hex, none; the transaction id);
//   - reply parsing (reply.go: Reply; Kind, the reply vocabulary of everything above the
//     loader, whose events mirror the C program's; the Parse functions) and RFC 4884 /
//     4950 extensions (extensions.go);
//   - matching (match.go: Verify, the one check that a reply answers a probe, and Matcher,
//     the outstanding probes of the socket engine).
//
// It does no I/O: no sockets, routes or netlink (those are package hostnet's), no clocks
// but the times it is given, so it is tested on crafted packets and captures alone.
package probe
