// Package cli implements the lotse command line.
package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
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
	root.AddCommand(newReleaseCommand(), newUpCommand(), newDownCommand(), newManagerCommand(), newLoadBalancerCommand(), newServiceLBCommand(), newClusterCommand(), newImageCommand())
	return root
}
