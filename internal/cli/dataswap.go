package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/lotse/lotse/internal/dataswap"
)

// newDataSwapCommand is what a seed's restore pods run, on an etcd
// member's volume (see internal/dataswap).
func newDataSwapCommand() *cobra.Command {
	var dir, name string
	cmd := &cobra.Command{
		Use:    "data-swap receive|commit|rollback",
		Short:  "replace a directory on a volume with a tree read from standard input (run by restores on seeds)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch args[0] {
			case "receive":
				return dataswap.Receive(os.Stdin, dir, name)
			case "commit":
				return dataswap.Commit(dir)
			case "rollback":
				return dataswap.Rollback(dir, name)
			}
			return fmt.Errorf("unknown step %q: use receive, commit or rollback", args[0])
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the volume's directory that holds the swapped directory")
	cmd.Flags().StringVar(&name, "name", "data", "the swapped directory's name in --dir")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}
