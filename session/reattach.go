package session

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/turnpath/turnpath/engine"
	"github.com/turnpath/turnpath/hostnet"
	"github.com/turnpath/turnpath/trace"
)

// A long run (monitor) outlives its way out: an interface that goes away or down and comes
// back, or a route that moves to another interface or source, costs an outage, not the
// run. Reattach closes the engine, waits for every target's route, routes them again and
// opens a fresh engine on what the routes now say; CheckRoutes notices a route that moved
// while the old one still sends.

// ErrRouteChanged is wrapped by CheckRoutes' error.
var ErrRouteChanged = errors.New("route changed")

// ReattachPoll is how often Reattach looks whether the way out is back.
var ReattachPoll = 250 * time.Millisecond

// Recoverable reports whether cause, a run's engine failure, is one Reattach can recover
// from: one of the run's interfaces is gone or down, or a target's route is gone or
// moved. Anything else (a bug, a full disk) ends the run.
func (s *Session) Recoverable(cause error, dsts []netip.Addr) bool {
	if errors.Is(cause, ErrRouteChanged) || s.Vanished(s.ifaces) != nil {
		return true
	}
	return s.CheckRoutes(dsts) != nil
}

// CheckRoutes looks every target's route up again and reports (wrapping ErrRouteChanged)
// the first one that is gone or leaves by another interface or source address.
func (s *Session) CheckRoutes(dsts []netip.Addr) error {
	for i, dst := range dsts {
		rt, err := s.Lookup(dst)
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrRouteChanged, dst, err)
		}
		if old := s.RouteOf(i); rt.Ifindex != old.Ifindex || rt.Src != old.Src {
			return fmt.Errorf("%w: %s now via %s from %s (was %s from %s)", ErrRouteChanged, dst, rt.Ifname, rt.Src, old.Ifname, old.Src)
		}
	}
	return nil
}

// Reattach replaces the engine after a recoverable failure: it closes the old one (its
// interface may be gone: its errors are of no use), waits until every target has a route
// again through interfaces that are up (polling every ReattachPoll until ctx ends), and
// opens a new engine with cfg(), which is called after the routing (interfaces may have
// new indexes, targets new sources). It returns the engine and the targets whose
// interface or source address changed.
func (s *Session) Reattach(ctx context.Context, dsts []netip.Addr, cfg func() engine.Config) (trace.Engine, []int, error) {
	if s.eng != nil {
		_ = s.eng.Close()
		s.eng = nil
	}
	old := make([]hostnet.Route, len(dsts))
	for i := range dsts {
		old[i] = s.RouteOf(i)
	}
	// The routing as it was, restored if the run ends before the way out is back: the
	// report still names each target's source.
	saved := *s
	saved.routes, saved.mtus, saved.first, saved.routeOf = slices.Clone(s.routes), slices.Clone(s.mtus), slices.Clone(s.first), slices.Clone(s.routeOf)
	tick := time.NewTicker(ReattachPoll)
	defer tick.Stop()
	for {
		// Every error is waited out (no route yet, an IPv6 source still tentative): the
		// network coming back is what the run waits for, Ctrl-C what ends the wait.
		s.ifaces = map[int]string{}
		if err := s.Route(ctx, dsts); err == nil && s.Vanished(s.ifaces) == nil {
			var moved []int
			for i := range dsts {
				if rt := s.RouteOf(i); rt.Ifindex != old[i].Ifindex || rt.Src != old[i].Src {
					moved = append(moved, i)
				}
			}
			eng, err := s.Open(cfg())
			if err != nil {
				return nil, nil, fmt.Errorf("reopen engine: %w", err)
			}
			return eng, moved, nil
		}
		select {
		case <-ctx.Done():
			s.routes, s.mtus, s.first, s.routeOf, s.ifaces = saved.routes, saved.mtus, saved.first, saved.routeOf, saved.ifaces
			return nil, nil, ctx.Err()
		case <-tick.C:
		}
	}
}
