// Package lab builds turnpath's network lab: a chain of network namespaces joined by
// veth pairs, with two ECMP diamonds (one with branches of different lengths), a silent
// router, two target groups served by coturn (one wildcard listener, one bound per
// address) and a dnsmasq resolver with PTR names for every interface.
//
// The topology is data (topology.go); addresses, routes, DNS names and the ground truth
// (truth.go) are derived from it, so tests compare a prober's output with what the
// network was built to do. Nothing is connected to the host namespace: the lab uses only
// 198.18.0.0/15 and fd51::/16, and no namespace has a default route.
//
// The namespaces are bind mounts in /run/netns, as with `ip netns`. Up first makes
// /run/netns a shared mount point the way `ip netns add` does (PrepareNetnsDir), so that
// a later `ip netns add` does not bind-mount it over the lab's namespaces and hide them.
//
// Typical use from a test (as root):
//
//	l, err := lab.Up(ctx, lab.Options{Prefix: "tpt1234", Profile: lab.ProfileFast})
//	defer lab.Down(context.Background(), l.Prefix())
//	conn, err := l.ListenPacket("udp4", ":0") // a socket in the client namespace
//	tt, _ := l.Truth().TargetTruth(l.Targets("wildcard")[0])
//	tt.HopsAt(3) // r3a, r3b, r3c with their reply addresses
package lab
