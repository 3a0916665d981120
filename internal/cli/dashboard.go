package cli

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/lotse/lotse/internal/dashboard"
)

func newDashboardCommand() *cobra.Command {
	flags := &clientFlags{}
	opts := dashboard.Options{}
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Serve the web dashboard: sign in with a management-API token, manage projects' clusters",
		Long: "Serves the dashboard until Ctrl-C. The page talks to the management API through this server with\n" +
			"the token you sign in with, and with nothing else: what your role does not allow, the API refuses.\n" +
			"Only the API's address and CA are taken from the kubeconfig, never its credentials.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := flags.kubeconfigPath()
			if err != nil {
				return err
			}
			cfg, err := clientcmd.BuildConfigFromFlags("", path)
			if err != nil {
				return fmt.Errorf("read management kubeconfig %s: %w", path, err)
			}
			server, err := dashboard.Start(cfg, opts)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "dashboard at %s (Ctrl-C stops it)\n", server.URL)
			select {
			case <-cmd.Context().Done():
				return server.Stop()
			case <-server.Done():
				return server.Err()
			}
		},
	}
	cmd.Flags().StringVar(&flags.kubeconfig, "kubeconfig", "", "kubeconfig of the management API: its address and CA (default $LOTSE_KUBECONFIG, else the one lotse up wrote)")
	cmd.Flags().StringVar(&opts.Addr, "address", "127.0.0.1:8080", "host:port to serve on; an address other than loopback needs --tls-cert and --tls-key")
	cmd.Flags().StringVar(&opts.CertFile, "tls-cert", "", "serve HTTPS with this certificate (PEM)")
	cmd.Flags().StringVar(&opts.KeyFile, "tls-key", "", "key of --tls-cert (PEM)")
	return cmd
}
