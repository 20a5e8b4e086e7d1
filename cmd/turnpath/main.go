// Command turnpath is a Paris-style, eBPF-accelerated path prober for STUN/TURN relays.
//
// main stays thin: it builds the CLI, runs it under a signal-aware context, and turns the
// returned error into one line on stderr and an exit code. All logic lives in packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

// version is set by the Makefile from `git describe` (-ldflags -X main.version=...).
var version = "dev"

// Exit codes, documented in the README.
const (
	exitOK         = 0 // everything reached / command succeeded
	exitNotReached = 1 // trace: some target not reached
	exitUsage      = 2 // bad flags, arguments or input files
	exitRuntime    = 3 // the environment failed us: privileges, BPF, netlink, a vanished interface
)

// exitError carries an exit code along with the error to print.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageError marks err as the user's mistake (exit 2).
func usageError(format string, a ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, a...)}
}

// runtimeError marks err as an environment failure (exit 3).
func runtimeError(err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: exitRuntime, err: err}
}

func newApp() *cli.App {
	app := &cli.App{
		Name:                 "turnpath",
		Usage:                "flow-stable, parallel path prober for STUN/TURN relays (UDP 3478)",
		Version:              version,
		HideVersion:          true,
		EnableBashCompletion: false,
		Suggest:              true,
		Commands: []*cli.Command{
			traceCommand(),
			multipathCommand(),
			monitorCommand(),
			checkCommand(),
			cleanupCommand(),
			labCommand(),
			versionCommand(),
			historyCommand(),
			asnCommand(),
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return &exitError{code: exitUsage, err: err}
		},
		// A command that does not exist is a usage error, not a silent help screen.
		CommandNotFound: func(c *cli.Context, name string) {
			fmt.Fprintf(c.App.ErrWriter, "turnpath: unknown command %q (see turnpath --help)\n", name)
			os.Exit(exitUsage)
		},
	}
	setUsageErrors(app.Commands)
	return app
}

// setUsageErrors makes a bad flag on any (sub)command exit 2, like one on the app.
func setUsageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = func(_ *cli.Context, err error, _ bool) error {
			return &exitError{code: exitUsage, err: err}
		}
		setUsageErrors(c.Subcommands)
	}
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version",
		Action: func(c *cli.Context) error {
			fmt.Fprintf(c.App.Writer, "turnpath %s\n", version)
			return nil
		},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newApp().RunContext(ctx, os.Args)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode prints err (one line) and maps it to the process exit code.
func exitCode(err error, w *os.File) int {
	if err == nil {
		return exitOK
	}
	logError(w, err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitRuntime
}
