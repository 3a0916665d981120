package releases

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/modfile"

	"github.com/lotse/lotse/internal/cloudapi/ccm"
	"github.com/lotse/lotse/internal/fsutil"
	"github.com/lotse/lotse/internal/gobuild"
)

// ProxyBuilder builds upstream binaries from the Go module proxy.
//
// k8s.io/kubernetes cannot be built with `go install pkg@version`: its go.mod
// points every staging module (k8s.io/api, k8s.io/client-go, ...) at a local
// directory. So we generate a small work module per version that requires
// k8s.io/kubernetes and replaces each staging module with its published
// v0.MINOR.PATCH tag, list the commands as `tool`s so `go mod tidy` resolves
// their whole graph, and build them with -trimpath, statically.
type ProxyBuilder struct {
	// WorkDir holds one generated module per version.
	WorkDir string
}

// EnsureKubernetes builds the Kubernetes components of r into binDir.
func (b *ProxyBuilder) EnsureKubernetes(ctx context.Context, r Release, binDir string, log io.Writer) error {
	modDir, err := b.kubernetesModule(ctx, r, "kubernetes-"+r.Version, componentTools(), "", log)
	if err != nil {
		return err
	}
	ldflags, err := versionLDFlags(r)
	if err != nil {
		return err
	}
	for i, c := range Components {
		fmt.Fprintf(log, "==> kubernetes %s: building %s (%d/%d)\n", r.Version, c, i+1, len(Components))
		if err := buildBinary(ctx, modDir, "k8s.io/kubernetes/cmd/"+c, filepath.Join(binDir, c), ldflags, log); err != nil {
			return err
		}
	}
	return nil
}

// componentTools are the packages of the upstream Components.
func componentTools() []string {
	var tools []string
	for _, c := range Components {
		tools = append(tools, "k8s.io/kubernetes/cmd/"+c)
	}
	return tools
}

// EnsureCloudController builds lotse-cloud-controller-manager for r into
// binDir: Lotse's command and provider (internal/cloudapi/ccm, written
// into the work module as a local module) against the release's own
// k8s.io/cloud-provider and the rest of its dependency graph.
func (b *ProxyBuilder) EnsureCloudController(ctx context.Context, r Release, binDir string, log io.Writer) error {
	name := "cloud-controller-manager-" + r.Version + "-" + ccm.SourceDigest()
	const src = "lotse-src"
	if err := ccm.WriteModule(filepath.Join(b.WorkDir, name, src)); err != nil {
		return err
	}
	extra := fmt.Sprintf("\nrequire %[1]s v0.0.0\n\nreplace %[1]s => ./%[2]s\n", ccm.ModulePath, src)
	modDir, err := b.kubernetesModule(ctx, r, name, []string{ccm.Command}, extra, log)
	if err != nil {
		return err
	}
	ldflags, err := versionLDFlags(r)
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "==> kubernetes %s: building %s\n", r.Version, ccm.Binary)
	return buildBinary(ctx, modDir, ccm.Command, filepath.Join(binDir, ccm.Binary), ldflags, log)
}

// kubernetesModule prepares the work module dir (below WorkDir) that
// builds tools at release r: it requires k8s.io/kubernetes at r's tag with
// every staging module at its published tag, plus extra go.mod lines.
func (b *ProxyBuilder) kubernetesModule(ctx context.Context, r Release, dir string, tools []string, extra string, log io.Writer) (string, error) {
	v, err := ParseVersion(r.Version)
	if err != nil {
		return "", err
	}
	modDir := filepath.Join(b.WorkDir, dir)
	if err := os.MkdirAll(modDir, 0o755); err != nil {
		return "", err
	}
	tag := "v" + r.Version
	fmt.Fprintf(log, "==> kubernetes %s: resolving k8s.io/kubernetes@%s\n", r.Version, tag)
	mod, err := gobuild.Download(ctx, modDir, "k8s.io/kubernetes@"+tag, log)
	if err != nil {
		return "", err
	}
	upstream, err := os.ReadFile(mod.GoMod)
	if err != nil {
		return "", err
	}
	gomod, err := kubernetesWorkModule(upstream, tag, fmt.Sprintf("v0.%d.%d", v.Minor, v.Patch), tools)
	if err != nil {
		return "", err
	}
	gomod = append(gomod, extra...)
	if err := fsutil.WriteIfChanged(filepath.Join(modDir, "go.mod"), gomod, 0o644); err != nil {
		return "", err
	}
	if err := gobuild.Go(ctx, modDir, log, "mod", "tidy"); err != nil {
		return "", fmt.Errorf("go mod tidy for kubernetes %s: %w", r.Version, err)
	}
	return modDir, nil
}

// versionLDFlags stamps r's version into the binaries, as upstream's
// release builds do.
func versionLDFlags(r Release) (string, error) {
	v, err := ParseVersion(r.Version)
	if err != nil {
		return "", err
	}
	tag := "v" + r.Version
	const verPkg = "k8s.io/component-base/version"
	const clientVerPkg = "k8s.io/client-go/pkg/version"
	var x []string
	for _, pkg := range []string{verPkg, clientVerPkg} {
		x = append(x,
			"-X", pkg+".gitVersion="+tag,
			"-X", pkg+".gitMajor="+fmt.Sprint(v.Major),
			"-X", pkg+".gitMinor="+fmt.Sprint(v.Minor),
			"-X", pkg+".gitTreeState=clean",
		)
	}
	return "-s -w " + strings.Join(x, " "), nil
}

// EnsureEtcd builds etcd, etcdctl and etcdutl (offline snapshot restore)
// at version into binDir.
func (b *ProxyBuilder) EnsureEtcd(ctx context.Context, version string, binDir string, log io.Writer) error {
	modDir := filepath.Join(b.WorkDir, "etcd-"+version)
	if err := os.MkdirAll(modDir, 0o755); err != nil {
		return err
	}
	tag := "v" + version
	gomod := fmt.Sprintf(`module lotse.local/etcdbuild

go 1.26.0

require (
	go.etcd.io/etcd/server/v3 %[1]s
	go.etcd.io/etcd/etcdctl/v3 %[1]s
	go.etcd.io/etcd/etcdutl/v3 %[1]s
)

tool (
	go.etcd.io/etcd/server/v3
	go.etcd.io/etcd/etcdctl/v3
	go.etcd.io/etcd/etcdutl/v3
)
`, tag)
	if err := fsutil.WriteIfChanged(filepath.Join(modDir, "go.mod"), []byte(gomod), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(log, "==> etcd %s: resolving modules\n", version)
	if err := gobuild.Go(ctx, modDir, log, "mod", "tidy"); err != nil {
		return fmt.Errorf("go mod tidy for etcd %s: %w", version, err)
	}
	for _, t := range []struct{ name, pkg string }{
		{"etcd", "go.etcd.io/etcd/server/v3"}, {"etcdctl", "go.etcd.io/etcd/etcdctl/v3"}, {"etcdutl", "go.etcd.io/etcd/etcdutl/v3"},
	} {
		fmt.Fprintf(log, "==> etcd %s: building %s\n", version, t.name)
		if err := buildBinary(ctx, modDir, t.pkg, filepath.Join(binDir, t.name), "-s -w", log); err != nil {
			return err
		}
	}
	return nil
}

// EnsureKonnectivity builds the konnectivity server and agent at version
// into binDir. The root module points its konnectivity-client at a local
// directory, so the work module requires the published one at the same tag.
func (b *ProxyBuilder) EnsureKonnectivity(ctx context.Context, version string, binDir string, log io.Writer) error {
	modDir := filepath.Join(b.WorkDir, "konnectivity-"+version)
	if err := os.MkdirAll(modDir, 0o755); err != nil {
		return err
	}
	if err := fsutil.WriteIfChanged(filepath.Join(modDir, "go.mod"), konnectivityWorkModule(version), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(log, "==> konnectivity %s: resolving modules\n", version)
	if err := gobuild.Go(ctx, modDir, log, "mod", "tidy"); err != nil {
		return fmt.Errorf("go mod tidy for konnectivity %s: %w", version, err)
	}
	for _, t := range []struct{ name, pkg string }{
		{"konnectivity-server", konnectivityModule + "/cmd/server"},
		{"konnectivity-agent", konnectivityModule + "/cmd/agent"},
	} {
		fmt.Fprintf(log, "==> konnectivity %s: building %s\n", version, t.name)
		if err := buildBinary(ctx, modDir, t.pkg, filepath.Join(binDir, t.name), "-s -w", log); err != nil {
			return err
		}
	}
	return nil
}

const konnectivityModule = "sigs.k8s.io/apiserver-network-proxy"

func konnectivityWorkModule(version string) []byte {
	return []byte(fmt.Sprintf(`// Generated by lotse: builds the konnectivity server and agent.
module lotse.local/konnectivitybuild

go 1.26.0

require (
	%[1]s v%[2]s
	%[1]s/konnectivity-client v%[2]s
)

tool (
	%[1]s/cmd/server
	%[1]s/cmd/agent
)
`, konnectivityModule, strings.TrimPrefix(version, "v")))
}

// kubernetesWorkModule renders the go.mod of the work module from upstream's.
func kubernetesWorkModule(upstream []byte, tag, stagingTag string, tools []string) ([]byte, error) {
	up, err := modfile.Parse("k8s.io/kubernetes/go.mod", upstream, nil)
	if err != nil {
		return nil, fmt.Errorf("parse upstream go.mod: %w", err)
	}
	var sb strings.Builder
	sb.WriteString("// Generated by lotse: builds upstream Kubernetes from the Go module proxy.\nmodule lotse.local/k8sbuild\n\n")
	if up.Go != nil {
		fmt.Fprintf(&sb, "go %s\n\n", up.Go.Version)
	}
	for _, g := range up.Godebug {
		fmt.Fprintf(&sb, "godebug %s=%s\n", g.Key, g.Value)
	}
	fmt.Fprintf(&sb, "\nrequire k8s.io/kubernetes %s\n\nreplace (\n", tag)
	staging := 0
	for _, r := range up.Replace {
		// Staging modules are the ones upstream points at a local directory.
		if r.New.Version == "" && strings.HasPrefix(r.New.Path, "./staging/") {
			fmt.Fprintf(&sb, "\t%s => %s %s\n", r.Old.Path, r.Old.Path, stagingTag)
			staging++
		}
	}
	if staging == 0 {
		return nil, fmt.Errorf("upstream go.mod has no staging replace directives; the build recipe needs updating")
	}
	sb.WriteString(")\n\ntool (\n")
	for _, t := range tools {
		fmt.Fprintf(&sb, "\t%s\n", t)
	}
	sb.WriteString(")\n")
	return []byte(sb.String()), nil
}

func buildBinary(ctx context.Context, modDir, pkg, out, ldflags string, log io.Writer) error {
	start := time.Now()
	tmp := out + ".tmp"
	if err := gobuild.Go(ctx, modDir, log, "build", "-trimpath", "-ldflags", ldflags, "-o", tmp, pkg); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("go build %s: %w", pkg, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	fmt.Fprintf(log, "    built %s in %s\n", filepath.Base(out), time.Since(start).Round(100*time.Millisecond))
	return nil
}
