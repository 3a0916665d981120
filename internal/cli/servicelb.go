package cli

import (
	"log"

	"github.com/spf13/cobra"

	"github.com/lotse/lotse/internal/servicelb"
)

func newServiceLBCommand() *cobra.Command {
	var config string
	cmd := &cobra.Command{
		Use:    "service-lb",
		Short:  "the balancer of one LoadBalancer Service (run by the supervisor)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return servicelb.RunFile(cmd.Context(), config, log.New(cmd.ErrOrStderr(), "service-lb: ", log.LstdFlags))
		},
	}
	cmd.Flags().StringVar(&config, "config", "", "JSON file with the balancer's spec; re-read when it changes")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}
