package trace

import (
	"context"
	"fmt"

	"github.com/turnpath/turnpath/pace"
)

// Batcher is what an engine may also do: send several probes, in order, with as few
// system calls as it can (engine.EBPF: one sendmmsg on AF_PACKET or the raw sockets per
// batch instead of one sendto per probe). It returns how many were sent and the first
// error; a probe that fails is skipped and the rest still go.
type Batcher interface {
	SendBatch(ps []Probe) (int, error)
}

// MaxBatch is the most probes trace, monitor and mda hand one SendBatch call: enough
// for the per-call cost to vanish (a batch of 64 costs ~1/64 of the syscall overhead), few
// enough that the first probe's replies are read soon.
const MaxBatch = 64

// SendAll sends ps with one SendBatch when eng is a Batcher, else one Send per probe
// (stopping at the first error, as a run does). It returns how many were sent and the
// first error.
func SendAll(eng Engine, ps []Probe) (int, error) {
	if len(ps) == 0 {
		return 0, nil
	}
	if b, ok := eng.(Batcher); ok {
		return b.SendBatch(ps)
	}
	for i, p := range ps {
		if err := eng.Send(p); err != nil {
			return i, err
		}
	}
	return len(ps), nil
}

// SendPaced sends ps in order as fast as bucket allows: the probes it has tokens for
// now (at most MaxBatch) in one SendAll, then a sleep on clock until the next token.
// It returns the first send error ("send probe: ..."), or ctx's error once cancelled.
func SendPaced(ctx context.Context, eng Engine, bucket *pace.Bucket, clock pace.Clock, ps []Probe) error {
	for len(ps) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		k, wait := bucket.TakeUpTo(clock.Now(), min(len(ps), MaxBatch))
		if k == 0 {
			if err := clock.Sleep(ctx, wait); err != nil {
				return err
			}
			continue
		}
		if _, err := SendAll(eng, ps[:k]); err != nil {
			return fmt.Errorf("send probe: %w", err)
		}
		ps = ps[k:]
	}
	return nil
}
