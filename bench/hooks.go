package bench

import "context"

// Hooks for the sections that need package reflector (an XDP program that answers every
// probe with a Time Exceeded, so the prober sees a network of any depth at line rate).
// Until it exists they render a "not measured yet" table with the columns they will
// fill. To plug one in, replace the body of runCapacity or runMemory: call
//
//	reflector.Capacity(ctx, reflector.CapacityOptions{Engine, Probes, Rate}) (CapacityResult, error)
//	reflector.PeakRSS(ctx, binary, targets, engine) (int64, error)
//
// inside the lab's client namespace (env.Lab, env.Command / env.Exec), for each engine
// and several runs, and fill res.Tables, res.Headlines, res.Commands and res.Raw like
// the other sections do (Summarize for median and min–max, Ratios for same-round ratios).

func runCapacity(_ context.Context, _ *Env) (*Result, error) {
	return &Result{
		Status: StatusNotMeasured,
		Text: []string{"Probes per second turnpath can send and match, with CPU per probe, eBPF vs socket engine, " +
			"against a reflector (XDP_TX Time Exceeded for every probe) on the far end of a veth. Target: ≥ 1 M probes/s " +
			"sent and matched on one core with the eBPF engine."},
		Tables: []Table{{
			Columns: []string{"engine", "offered rate", "sent/s", "matched/s", "lost", "CPU per probe"},
			Rows: [][]string{
				{"eBPF", "not measured yet", "", "", "", ""},
				{"socket", "not measured yet", "", "", "", ""},
			},
		}},
	}, nil
}

func runMemory(_ context.Context, _ *Env) (*Result, error) {
	return &Result{
		Status: StatusNotMeasured,
		Text: []string{"Peak RSS of `turnpath trace` for 1, 1 000 and 100 000 targets (the reflector answers for all of " +
			"them): it should stay flat, not grow with the target list."},
		Tables: []Table{{
			Columns: []string{"engine", "1 target", "1 000 targets", "100 000 targets"},
			Rows: [][]string{
				{"eBPF", "not measured yet", "", ""},
				{"socket", "not measured yet", "", ""},
			},
		}},
	}, nil
}
