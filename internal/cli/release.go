package cli

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lotse/lotse/internal/images"
	"github.com/lotse/lotse/internal/manager"
	"github.com/lotse/lotse/internal/releases"
)

func newReleaseCommand() *cobra.Command {
	var cacheDir string
	cmd := &cobra.Command{
		Use:   "release",
		Short: "The catalog of Kubernetes versions and their binaries",
	}
	cmd.PersistentFlags().StringVar(&cacheDir, "cache-dir", releases.DefaultCacheDir(), "where upstream binaries are built and kept ($LOTSE_CACHE_DIR)")
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the Kubernetes versions of the catalog, their classification and whether they are built",
		Long: "Lists every release with its classification (supported; deprecated: works until its expiration date;\n" +
			"expired: no cluster may choose it and maintenance moves clusters off it), the versions of etcd,\n" +
			"CoreDNS and pause that go with it (as that release's kubeadm pins them), and whether its binaries\n" +
			"are in the cache.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			store := releases.NewStore(cacheDir)
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "VERSION\tCLASSIFICATION\tEXPIRES\tETCD\tCOREDNS\tPAUSE\tDEFAULT\tBUILT")
			now := time.Now()
			for _, r := range releases.All() {
				def := ""
				if r.Version == releases.Default().Version {
					def = "yes"
				}
				built := "no"
				if store.Installed(r) {
					built = "yes"
				}
				expires := r.ExpirationDate
				if expires == "" {
					expires = "-"
				}
				set := images.ForRelease(r.Version)
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Version, r.ClassificationAt(now), expires, r.Etcd,
					set.CoreDNS.Tag, set.Pause.Tag, def, built)
			}
			return w.Flush()
		},
	})
	var nodeImages bool
	build := &cobra.Command{
		Use:   "build [VERSION...]",
		Short: "Build the upstream binaries of a version (default: the newest) into the cache",
		Long: "Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl,\n" +
			"the matching etcd and Lotse's cloud controller manager from the Go module proxy. A cold build\n" +
			"takes about 10 minutes on 2 cores; a build that is already in the cache returns at once.\n" +
			"--node-images also builds the images every node of the version gets (CoreDNS, kube-router, ...),\n" +
			"which the manager otherwise builds when the first node needs them.",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				args = []string{releases.Default().Version}
			}
			store := releases.NewStore(cacheDir)
			for _, v := range args {
				r, err := releases.Lookup(v)
				if err != nil {
					return err
				}
				if _, err := store.Ensure(cmd.Context(), r, os.Stderr); err != nil {
					return err
				}
				if nodeImages {
					imgs, err := manager.NodeImages(r.Version, store)
					if err != nil {
						return err
					}
					builder := &images.Builder{CacheDir: cacheDir, Log: os.Stderr}
					for _, img := range imgs {
						if _, err := builder.Ensure(cmd.Context(), img); err != nil {
							return fmt.Errorf("node image %s: %w", img.Ref(), err)
						}
					}
				}
				fmt.Fprintf(cmd.OutOrStdout(), "kubernetes %s (etcd %s) is ready in %s\n", r.Version, r.Etcd, store.KubernetesBinDir(r.Version))
			}
			return nil
		},
	}
	build.Flags().BoolVar(&nodeImages, "node-images", false, "also build the images every node of the version gets")
	cmd.AddCommand(build)
	var version string
	path := &cobra.Command{
		Use:   "path COMPONENT",
		Short: "Print the path of a built binary (kubectl, kube-apiserver, etcd, ...)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := releases.Lookup(version)
			if err != nil {
				return err
			}
			bins, err := releases.NewStore(cacheDir).Binaries(r)
			if err != nil {
				return err
			}
			p := bins.Path(args[0])
			if p == "" {
				return fmt.Errorf("unknown component %q; known: %v %v %v", args[0], releases.Components, releases.EtcdComponents, releases.KonnectivityComponents)
			}
			fmt.Fprintln(cmd.OutOrStdout(), p)
			return nil
		},
	}
	path.Flags().StringVar(&version, "kubernetes-version", releases.Default().Version, "release to look in")
	cmd.AddCommand(path)
	return cmd
}
