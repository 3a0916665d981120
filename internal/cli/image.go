package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

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
	cmd.AddCommand(add)
	return cmd
}
