// Package cli implements the lotse command line.
package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// Execute runs the lotse command line and returns the process exit code.
func Execute() int {
	// lotse up keeps running (and must clean up) when whoever reads its
	// output goes away; without this, a write to a closed pipe would kill
	// it with SIGPIPE before it stops its control planes.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCommand()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 1
	}
	return 0
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "lotse",
		Short:         "Lotse: Kubernetes clusters as a service",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newReleaseCommand(), newUpCommand(), newDownCommand(), newManagerCommand(), newLoadBalancerCommand(), newServiceLBCommand(), newDataSwapCommand(), newClusterCommand(), newProjectCommand(), newSeedCommand(), newFleetCommand(), newDashboardCommand(), newImageCommand())
	root.InitDefaultCompletionCmd()
	requireSubcommands(root)
	return root
}

// requireSubcommands makes every command group fail on an unknown or a
// missing subcommand: cobra would print the group's help and exit 0,
// which a script takes for success. `lotse` alone still prints its help.
func requireSubcommands(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		requireSubcommands(c)
	}
	if !cmd.HasSubCommands() || cmd.Run != nil || cmd.RunE != nil {
		return
	}
	cmd.Args = func(c *cobra.Command, args []string) error {
		var names []string
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() {
				names = append(names, sub.Name())
			}
		}
		if len(args) == 0 {
			if !c.HasParent() {
				return nil
			}
			return fmt.Errorf("%s needs a subcommand: %s (see %s --help)", c.CommandPath(), strings.Join(names, ", "), c.CommandPath())
		}
		return fmt.Errorf("unknown command %q for %q; commands: %s", args[0], c.CommandPath(), strings.Join(names, ", "))
	}
	cmd.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
}
