package cli

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lotse/lotse/internal/fsutil"
	"github.com/lotse/lotse/internal/images"
	"github.com/lotse/lotse/internal/manager"
	"github.com/lotse/lotse/internal/releases"
)

func newImageCommand() *cobra.Command {
	var cacheDir string
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Offline images loaded into every node",
	}
	cmd.PersistentFlags().StringVar(&cacheDir, "cache-dir", releases.DefaultCacheDir(), "cache directory ($LOTSE_CACHE_DIR)")
	var binary string
	add := &cobra.Command{
		Use:   "add NAME:TAG --binary PATH",
		Short: "Build an image from a static binary and load it into every node (no registry needed)",
		Long: "Packs a static linux/amd64 binary into a one-layer image " + images.Registry + "/NAME:TAG whose\n" +
			"entrypoint is the binary, and puts it into the bundle every node loads (existing nodes within\n" +
			"seconds). Use it in pods with imagePullPolicy: Never.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, tag, ok := strings.Cut(args[0], ":")
			if !ok || name == "" || tag == "" {
				return fmt.Errorf("expected NAME:TAG, e.g. echo:v1; got %q", args[0])
			}
			if binary == "" {
				return fmt.Errorf("--binary is required: the static binary to pack")
			}
			b := &images.Builder{CacheDir: cacheDir, Log: cmd.ErrOrStderr()}
			img := images.FromBinary(name, tag, binary, []string{"/" + filepath.Base(binary)})
			tar, err := b.Ensure(cmd.Context(), img)
			if err != nil {
				return err
			}
			dir := manager.ExtraImagesDir(cacheDir)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			data, err := os.ReadFile(tar)
			if err != nil {
				return err
			}
			dst := filepath.Join(dir, name+"-"+tag+".tar")
			if err := os.WriteFile(dst+".tmp", data, 0o644); err != nil {
				return err
			}
			if err := os.Rename(dst+".tmp", dst); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is in the node bundle (%s)\n", img.Ref(), dst)
			return nil
		},
	}
	add.Flags().StringVar(&binary, "binary", "", "static binary to pack")
	cmd.AddCommand(add, newManagerImageCommand(&cacheDir))
	return cmd
}

// newManagerImageCommand builds the image of a manager installed in a
// cluster (charts/lotse): lotse and the releases it offers.
func newManagerImageCommand(cacheDir *string) *cobra.Command {
	var binary, output string
	var versions []string
	cmd := &cobra.Command{
		Use:   "manager TAG",
		Short: "Build the manager's image (lotse and its releases) for the Helm chart",
		Long: "Builds " + images.Registry + "/" + images.ManagerName + ":TAG: the static lotse binary and the built\n" +
			"releases (--release, each built first with `lotse release build`), which the seed-hosted control\n" +
			"planes of that manager run too. By default the image joins the bundle every node of this host's\n" +
			"clusters loads (as `lotse image add`); --output writes its tarball instead, for a registry.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if binary == "" {
				self, err := os.Executable()
				if err != nil {
					return err
				}
				binary = self
			}
			if len(versions) == 0 {
				versions = []string{releases.Default().Version}
			}
			store := releases.NewStore(*cacheDir)
			var dirs []string
			for _, v := range versions {
				rel, err := releases.Lookup(v)
				if err != nil {
					return fmt.Errorf("--release %s: %w", v, err)
				}
				if _, err := store.Binaries(rel); err != nil {
					return fmt.Errorf("--release %s: %w", v, err)
				}
				// In a fixed order: the image's content and digest follow it.
				dirs = append(dirs, slices.Sorted(maps.Keys(store.Dirs(rel)))...)
			}
			abs, err := filepath.Abs(*cacheDir)
			if err != nil {
				return err
			}
			b := &images.Builder{CacheDir: *cacheDir, Log: cmd.ErrOrStderr()}
			img := images.Manager(args[0], binary, abs, dirs)
			tar, err := b.Ensure(cmd.Context(), img)
			if err != nil {
				return err
			}
			dst := output
			if dst == "" {
				dir := manager.ExtraImagesDir(*cacheDir)
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return err
				}
				dst = filepath.Join(dir, images.ManagerName+"-"+args[0]+".tar")
			}
			if err := fsutil.CopyFileAtomic(tar, dst); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", img.Ref(), dst)
			return nil
		},
	}
	cmd.Flags().StringVar(&binary, "binary", "", "the static lotse binary (default: this one)")
	cmd.Flags().StringSliceVar(&versions, "release", nil, "Kubernetes version the image offers (repeatable; default: the default release)")
	cmd.Flags().StringVar(&output, "output", "", "write the image's tarball here instead of adding it to the node bundle")
	return cmd
}
