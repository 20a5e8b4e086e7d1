package session

import (
	"context"
	"net/netip"

	"github.com/turnpath/turnpath/asn"
)

// The AS step of the enrichment (--asn): the session's AS resolver looks the answering
// addresses up beside the PTR names (Names), within the resolver's own time bound, and
// the reports read the answers through ASOf. The run's counts (ASNStats) go into its
// JSON metadata; the answers go to the disk cache when the session closes.

// asnState is what the session keeps of its AS lookups: the counts a report points to,
// made on first use by the command's goroutine and updated by a lookup it waits for
// (no lock: the session is copied by value when it re-attaches).
type asnState struct {
	stats *asn.Stats
}

func (s *Session) statsPtr() *asn.Stats {
	if s.asn.stats == nil {
		s.asn.stats = &asn.Stats{}
	}
	return s.asn.stats
}

// lookupAS starts looking addrs up (nothing without a resolver); the returned func waits
// for the answers.
func (s *Session) lookupAS(addrs []netip.Addr) (wait func()) {
	if s.AS == nil || len(addrs) == 0 {
		return func() {}
	}
	done := make(chan struct{})
	stats := s.statsPtr()
	go func() {
		defer close(done)
		s.AS.Lookup(context.Background(), addrs)
		*stats = s.AS.Stats()
	}()
	return func() { <-done }
}

// PrefetchAS looks addrs up in the background while the run goes on probing: the
// lookup at output time then finds them answered.
func (s *Session) PrefetchAS(addrs []netip.Addr) {
	if s.AS != nil && len(addrs) > 0 {
		s.AS.Start(addrs)
	}
}

// ASOf reads the AS answers of the addresses Names was given (nil without --asn).
func (s *Session) ASOf() func(netip.Addr) asn.Info {
	if s.AS == nil {
		return nil
	}
	return s.AS.Known
}

// ASNStats are the run's AS lookup counts, kept up to date as lookups finish (nil
// without --asn): a report holding the pointer writes the final counts.
func (s *Session) ASNStats() *asn.Stats {
	if s.AS == nil {
		return nil
	}
	st := s.statsPtr()
	*st = s.AS.Stats()
	return st
}

// saveAS writes the run's answers to the disk cache; a failure is a warning, not the
// run's error.
func (s *Session) saveAS() {
	if s.AS == nil {
		return
	}
	if err := s.AS.Save(); err != nil && s.AS.Warn != nil {
		s.AS.Warn(err.Error())
	}
}
