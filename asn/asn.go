// Package asn says which network (autonomous system) holds an address: its origin AS
// number, the AS's name, the announced prefix and country, from a Source chosen by the
// user (an IRRd whois server such as RADB, Team Cymru's DNS or bulk whois, or an offline
// data file). A Resolver puts the policy around a source: private ranges answered
// locally, an in-memory and an on-disk cache, concurrent lookups bounded in time, and
// counts of what failed.
//
// It imports nothing of turnpath's: the session asks it, the reports print Info.
package asn

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
)

// Info is what a source says about one address.
type Info struct {
	ASN      uint32 `json:"asn"`
	Name     string `json:"name,omitempty"`   // the AS's name (org), "" when the source has none
	Prefix   string `json:"prefix,omitempty"` // the announced prefix or range holding the address
	CC       string `json:"cc,omitempty"`     // country code
	Registry string `json:"registry,omitempty"`
	// Private: a private, shared, documentation or benchmark address, answered locally
	// (no query: nobody outside holds it).
	Private bool `json:"private,omitempty"`
	// Failed: the source did not answer in time (or at all); shown as AS?.
	Failed bool `json:"failed,omitempty"`
}

// Found reports whether the source named an origin AS.
func (i Info) Found() bool { return i.ASN != 0 && !i.Failed && !i.Private }

// String is the short form the outputs use: AS64500, "private", AS? (failed) or AS0
// (no entry, as traceroute -a shows it).
func (i Info) String() string {
	switch {
	case i.Failed:
		return "AS?"
	case i.Private:
		return "private"
	}
	return "AS" + strconv.FormatUint(uint64(i.ASN), 10)
}

// Label is String with the name when there is one: "AS64500 EXAMPLE-NET".
func (i Info) Label() string {
	if i.Found() && i.Name != "" {
		return i.String() + " " + i.Name
	}
	return i.String()
}

// PrivateASN reports whether n is reserved for private use (RFC 6996) or is AS0 /
// AS_TRANS / the last ASN: an AS path collapses those, as it does private addresses.
func PrivateASN(n uint32) bool {
	return n == 0 || n == 23456 || (n >= 64512 && n <= 65535) || n >= 4200000000
}

// Source answers lookups of addresses. Lookup returns what it found; an address it has
// no entry for maps to Info{} (AS0); an address missing from the map failed. err says
// why some or all failed (a dead server, the context's deadline).
type Source interface {
	Name() string // "radb whois.radb.net:43", for warnings and the run metadata
	Lookup(ctx context.Context, addrs []netip.Addr) (map[netip.Addr]Info, error)
}

// Kinds are the --asn SOURCE values (file:PATH takes a path).
var Kinds = []string{"radb", "cymru-dns", "cymru-whois", "file:PATH"}

// Config says where the network sources send their queries; zero values are the
// public services.
type Config struct {
	Whois     string // --whois HOST[:PORT] (radb and cymru-whois); default per source, port 43
	DNSServer string // --dns-server HOST[:PORT] (cymru-dns); default the system resolver
}

// Default servers.
const (
	RADBServer  = "whois.radb.net"
	CymruWhois  = "whois.cymru.com"
	CymruOrigin = "origin.asn.cymru.com"
)

// NewSource builds the source a --asn value names. A file is loaded here: a malformed
// one is an error naming the file and line (*FileError).
func NewSource(spec string, cfg Config) (Source, error) {
	switch {
	case spec == "radb":
		return &RADB{Server: hostPort(cfg.Whois, RADBServer, "43")}, nil
	case spec == "cymru-whois":
		return &CymruBulk{Server: hostPort(cfg.Whois, CymruWhois, "43")}, nil
	case spec == "cymru-dns":
		return NewCymruDNS(cfg.DNSServer), nil
	case len(spec) > 5 && spec[:5] == "file:":
		return LoadFile(spec[5:])
	}
	return nil, fmt.Errorf("unknown --asn source %q (radb, cymru-dns, cymru-whois, file:PATH)", spec)
}
