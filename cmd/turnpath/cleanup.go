package main

import (
	"fmt"

	"github.com/turnpath/turnpath/loader"
	"github.com/urfave/cli/v2"
	"github.com/vishvananda/netlink"
)

func cleanupCommand() *cli.Command {
	return &cli.Command{
		Name:  "cleanup",
		Usage: "remove the BPF objects turnpath keeps pinned between runs, and legacy tc filters crashed runs left",
		Description: "The eBPF engine keeps its loaded programs and maps pinned in bpffs (" + loader.DefaultPinDir + ")\n" +
			"so that later runs start without loading and verifying them again; nothing stays attached.\n" +
			"cleanup removes every slot no running turnpath holds (all versions), and, in the current\n" +
			"network namespace, legacy tc filters named turnpath_* whose program no process holds.\n" +
			"Exit 0, or 3 when something could not be removed.",
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError("cleanup: no arguments")
			}
			removed, inUse, err := loader.RemovePinned("")
			for _, p := range removed {
				fmt.Fprintf(c.App.Writer, "removed %s\n", p)
			}
			for _, p := range inUse {
				fmt.Fprintf(c.App.Writer, "kept %s (a running turnpath holds it)\n", p)
			}
			links, lerr := netlink.LinkList()
			if lerr == nil {
				for _, l := range links {
					if ferr := loader.CleanupStale(l.Attrs().Index); ferr != nil && err == nil {
						err = ferr
					}
				}
			}
			if len(removed)+len(inUse) == 0 {
				fmt.Fprintln(c.App.Writer, "no pinned turnpath objects")
			}
			if err != nil {
				return runtimeError(fmt.Errorf("cleanup: %w", err))
			}
			return nil
		},
	}
}
