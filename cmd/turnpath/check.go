package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/turnpath/turnpath/doctor"
	"github.com/turnpath/turnpath/hostnet"
	"github.com/urfave/cli/v2"
)

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:      "check",
		Usage:     "diagnose what turnpath can do here: kernel, BTF, capabilities, BPF load/attach, engine",
		ArgsUsage: "[TARGET]",
		Description: "Loads the BPF programs and, given a TARGET, attaches them to the interface the route\n" +
			"to TARGET uses and detaches again; then says which engine a trace would use.\n" +
			"Exit 0 when some engine can trace, 3 when none can or there is no route to TARGET (the\n" +
			"report is printed first), 2 for bad input.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "format", Value: "text", Usage: "text or json"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return usageError("check: at most one TARGET")
			}
			format := c.String("format")
			if format != "text" && format != "json" {
				return usageError("check: unknown --format %q (text, json)", format)
			}
			r, err := doctor.Run(c.Context, doctor.Options{Target: c.Args().First(), BPF: &bpfDoctor{}})
			if err != nil && !errors.Is(err, hostnet.ErrNoRoute) {
				return usageError("check: %w", err)
			}
			noRoute := err // the report is there too: print it, then say so
			if format == "json" {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				if err := enc.Encode(r); err != nil {
					return runtimeError(fmt.Errorf("write report: %w", err))
				}
			} else {
				printReport(c, r)
			}
			if noRoute != nil {
				return runtimeError(fmt.Errorf("check: %w", noRoute)) // same code as trace
			}
			if !r.Usable() {
				return &exitError{code: exitRuntime, err: fmt.Errorf("check: %s", r.EngineWhy)}
			}
			return nil
		},
	}
}

func printReport(c *cli.Context, r *doctor.Report) {
	w := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
	for _, it := range r.Items {
		fmt.Fprintf(w, "%s\t%s\t%s\n", it.Status, it.Name, it.Detail)
		if it.Fix != "" {
			fmt.Fprintf(w, "\t\t→ %s\n", it.Fix)
		}
	}
	w.Flush()
	fmt.Fprintf(c.App.Writer, "engine: %s (%s)\n", r.Engine, r.EngineWhy)
	if r.Send != "" {
		fmt.Fprintf(c.App.Writer, "send: %s\nreceive: %s\n", r.Send, r.Receive)
	}
}
