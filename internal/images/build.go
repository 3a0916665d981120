package images

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/lotse/lotse/internal/fsutil"
	"github.com/lotse/lotse/internal/gobuild"
	"github.com/lotse/lotse/internal/releases"
)

// recipe versions the way images are assembled; bumping it rebuilds every
// cached image.
const recipe = "2"

// epoch is the creation time of every image and the mtime of every file in
// it, so that the same input always gives the same digests.
var epoch = time.Unix(0, 0).UTC()

// Builder builds image tarballs into a cache:
//
//	CacheDir/images/<name>-<tag>.tar        docker-save tarball (ctr images import reads it)
//	CacheDir/images/<name>-<tag>.tar.stamp  JSON: what it was built from, its digests
//	CacheDir/images/<name>-<tag>.tar.lock   flock serialising builds of that image
//	CacheDir/build/pause-<tag>/             pause.c and the gcc output
//	CacheDir/build/coredns-<version>/       the generated CoreDNS work module
//
// A tarball is usable only when its stamp exists and names the same inputs;
// anything else is rebuilt.
type Builder struct {
	// CacheDir is the root of the cache; empty means releases.DefaultCacheDir().
	CacheDir string
	// Log receives build progress and compiler output; nil discards it.
	Log io.Writer

	inputs inputDigests
}

// NewBuilder returns a builder on the default cache directory.
func NewBuilder(log io.Writer) *Builder {
	return &Builder{CacheDir: releases.DefaultCacheDir(), Log: log}
}

func (b *Builder) cacheDir() string {
	if b.CacheDir != "" {
		return b.CacheDir
	}
	return releases.DefaultCacheDir()
}

func (b *Builder) log() io.Writer {
	if b.Log != nil {
		return b.Log
	}
	return io.Discard
}

// TarPath is where img's tarball lives in the cache (built or not).
func (b *Builder) TarPath(img Image) string {
	return filepath.Join(b.cacheDir(), "images", img.Name+"-"+img.Tag+".tar")
}

// Stamp is what a completed build records next to its tarball.
type Stamp struct {
	Ref string `json:"ref"`
	// Key identifies the inputs (recipe, source version, binary digest, ...).
	Key string `json:"key"`
	// ImageID is the digest of the image config: the ID containerd and
	// kubelet report for the image once imported.
	ImageID string `json:"imageID"`
	// ManifestDigest is the digest of the OCI manifest go-containerregistry
	// computed. containerd builds its own manifest when importing a
	// docker-save tarball, so only ImageID survives the import.
	ManifestDigest string `json:"manifestDigest"`
	// Size is the tarball's size in bytes.
	Size      int64  `json:"size"`
	Completed string `json:"completed"`
	Took      string `json:"took"`
}

// Stamp returns the stamp of img's last completed build, or an error if it
// has none. The stamp may be of older inputs (a changed binary, an older
// recipe); Built also checks that.
func (b *Builder) Stamp(img Image) (Stamp, error) {
	var s Stamp
	data, err := os.ReadFile(b.TarPath(img) + ".stamp")
	if err != nil {
		return s, err
	}
	err = json.Unmarshal(data, &s)
	return s, err
}

// EnsureSet builds every image of s and returns their tarballs, in s.All()
// order.
func (b *Builder) EnsureSet(ctx context.Context, s Set) ([]string, error) {
	var out []string
	for _, img := range s.All() {
		p, err := b.Ensure(ctx, img)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Ensure builds img's tarball unless the cache already has it, and returns
// its path. It is idempotent and safe to call from several processes at
// once; a failed build leaves no stamp, so its output is never used.
func (b *Builder) Ensure(ctx context.Context, img Image) (string, error) {
	if err := img.validate(); err != nil {
		return "", err
	}
	tarPath := b.TarPath(img)
	key, err := b.key(img)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", img.Ref(), err)
	}
	if b.upToDate(img, key) {
		return tarPath, nil
	}
	if err := os.MkdirAll(filepath.Dir(tarPath), 0o755); err != nil {
		return "", err
	}
	unlock, err := fsutil.Lock(ctx, tarPath+".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if b.upToDate(img, key) { // another process built it while we waited
		return tarPath, nil
	}
	if err := b.build(ctx, img, key); err != nil {
		return "", fmt.Errorf("image %s: %w", img.Ref(), err)
	}
	return tarPath, nil
}

func (i Image) validate() error {
	if i.Name == "" || i.Tag == "" {
		return fmt.Errorf("image has no name or tag (is the Kubernetes version in the image catalog?)")
	}
	if _, err := name.NewTag(i.Ref(), name.StrictValidation); err != nil {
		return fmt.Errorf("image reference %q: %w", i.Ref(), err)
	}
	if strings.ContainsAny(i.Name, "/") {
		return fmt.Errorf("image name %q must not contain '/'", i.Name)
	}
	if len(i.Entrypoint) == 0 || !path.IsAbs(i.Entrypoint[0]) || path.Clean(i.Entrypoint[0]) != i.Entrypoint[0] || i.Entrypoint[0] == "/" {
		return fmt.Errorf("image %s: entrypoint %q must start with the clean absolute path of the binary", i.Ref(), i.Entrypoint)
	}
	for l := range i.Links {
		if !path.IsAbs(l) || path.Clean(l) != l || l == "/" {
			return fmt.Errorf("image %s: link %q must be a clean absolute path", i.Ref(), l)
		}
	}
	switch i.Kind {
	case KindPause, KindCoreDNS:
		if i.Source == "" {
			return fmt.Errorf("image %s: no source version", i.Ref())
		}
	case KindBinary:
		if i.Binary == "" {
			return fmt.Errorf("image %s: no binary", i.Ref())
		}
	case KindGoModule:
		if i.Module == "" || i.Source == "" || !strings.HasPrefix(i.Package, i.Module) {
			return fmt.Errorf("image %s: needs a module, its version and a main package inside it", i.Ref())
		}
	default:
		return fmt.Errorf("image %s: unknown kind %q", i.Ref(), i.Kind)
	}
	return nil
}

// key identifies everything a build's result depends on.
func (b *Builder) key(img Image) (string, error) {
	parts := []string{"recipe=" + recipe, "kind=" + string(img.Kind), "ref=" + img.Ref(),
		"entrypoint=" + strings.Join(img.Entrypoint, "\x00"), "user=" + img.User}
	if len(img.Env) > 0 {
		parts = append(parts, "env="+strings.Join(img.Env, "\x00"))
	}
	switch img.Kind {
	case KindPause:
		parts = append(parts, "kubernetes="+img.Source, "cflags="+strings.Join(pauseCFlags(img), " "))
	case KindCoreDNS:
		parts = append(parts, "coredns="+img.Source, "plugins="+strings.Join(CoreDNSPlugins, ","))
	case KindBinary:
		sum, err := b.inputs.digest("binary "+img.Binary,
			func() (*hostTree, error) { return &hostTree{files: map[string]bool{img.Binary: true}}, nil },
			func(*hostTree) (string, error) { return FileSHA256(img.Binary) })
		if err != nil {
			return "", err
		}
		parts = append(parts, "binary=sha256:"+sum)
	case KindGoModule:
		parts = append(parts, "module="+img.Module+"@"+img.Source, "package="+img.Package)
	}
	for _, l := range sortedLinks(img.Links) {
		parts = append(parts, "link="+l+"->"+img.Links[l])
	}
	if len(img.HostFiles) > 0 {
		sum, err := b.inputs.digest("hostfiles "+strings.Join(img.HostFiles, ","),
			func() (*hostTree, error) { return collectHostFiles(context.Background(), img.HostFiles) },
			(*hostTree).digest)
		if err != nil {
			return "", err
		}
		parts = append(parts, "hostfiles="+strings.Join(img.HostFiles, ",")+"@sha256:"+sum)
	}
	return strings.Join(parts, ";"), nil
}

// Built returns img's tarball if the cache has it complete and built from
// the current inputs (for a FromBinary image: the binary as it is now), without
// building anything.
func (b *Builder) Built(img Image) (string, bool) {
	if img.validate() != nil {
		return "", false
	}
	key, err := b.key(img)
	if err != nil || !b.upToDate(img, key) {
		return "", false
	}
	return b.TarPath(img), true
}

func (b *Builder) upToDate(img Image, key string) bool {
	s, err := b.Stamp(img)
	if err != nil || s.Key != key {
		return false
	}
	fi, err := os.Stat(b.TarPath(img))
	return err == nil && fi.Size() == s.Size
}

func (b *Builder) build(ctx context.Context, img Image, key string) error {
	start := time.Now()
	tarPath := b.TarPath(img)
	log := b.log()
	// From here on the old tarball (if any) is no longer complete.
	if err := os.Remove(tarPath + ".stamp"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	fmt.Fprintf(log, "==> image %s: building\n", img.Ref())
	var binary, desc string
	var err error
	switch img.Kind {
	case KindPause:
		binary, err = b.buildPause(ctx, img)
		desc = "k8s.io/kubernetes@" + img.Source + " build/pause/linux/pause.c"
	case KindCoreDNS:
		binary, err = b.buildCoreDNS(ctx, img)
		desc = "github.com/coredns/coredns@" + img.Source + " plugins " + strings.Join(CoreDNSPlugins, ",")
	case KindBinary:
		binary = img.Binary
	case KindGoModule:
		binary, err = b.buildGoModule(ctx, img)
		desc = img.Package + "@" + img.Source
	}
	if err != nil {
		return err
	}
	var layers []string
	if len(img.HostFiles) > 0 || len(img.Links) > 0 {
		tree, err := collectHostFiles(ctx, img.HostFiles)
		if err != nil {
			return err
		}
		for _, l := range sortedLinks(img.Links) {
			tree.links[l] = img.Links[l]
		}
		hostLayer := tarPath + ".hostfiles.tmp"
		defer os.Remove(hostLayer)
		if err := tree.writeLayer(hostLayer); err != nil {
			return err
		}
		layers = append(layers, hostLayer)
		if len(img.HostFiles) > 0 {
			desc += " with host files " + strings.Join(img.HostFiles, " ")
		}
	}
	if err := checkStaticAMD64(binary); err != nil {
		return err
	}
	layerPath := tarPath + ".layer.tmp"
	defer os.Remove(layerPath)
	binSum, err := writeLayer(layerPath, binary, img.Entrypoint[0])
	if err != nil {
		return err
	}
	if img.Kind == KindBinary {
		if !strings.Contains(key+";", ";binary=sha256:"+binSum+";") {
			return fmt.Errorf("binary %s changed while the image was being built; try again", img.Binary)
		}
		// Not the path: the same binary gives the same image wherever it is.
		desc = "static binary sha256:" + binSum
	}
	image, err := assemble(img, append(layers, layerPath), desc)
	if err != nil {
		return err
	}
	tag, err := name.NewTag(img.Ref(), name.StrictValidation)
	if err != nil {
		return err
	}
	tmp := tarPath + ".tmp"
	defer os.Remove(tmp)
	if err := tarball.WriteToFile(tmp, tag, image); err != nil {
		return fmt.Errorf("write tarball: %w", err)
	}
	if err := os.Rename(tmp, tarPath); err != nil {
		return err
	}
	fi, err := os.Stat(tarPath)
	if err != nil {
		return err
	}
	id, err := image.ConfigName()
	if err != nil {
		return err
	}
	digest, err := image.Digest()
	if err != nil {
		return err
	}
	took := time.Since(start)
	stamp, err := json.MarshalIndent(Stamp{
		Ref: img.Ref(), Key: key, ImageID: id.String(), ManifestDigest: digest.String(), Size: fi.Size(),
		Completed: time.Now().UTC().Format(time.RFC3339), Took: took.Round(100 * time.Millisecond).String(),
	}, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(tarPath+".stamp", append(stamp, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(log, "    built %s (%s, %d KiB) in %s\n", filepath.Base(tarPath), id, fi.Size()/1024, took.Round(100*time.Millisecond))
	return nil
}

// writeLayer writes an uncompressed layer tarball holding only the file at
// dest (an absolute path in the image), with fixed owner, mode and mtime.
// It returns the SHA-256 of the file it stored.
func writeLayer(layerPath, binary, dest string) (string, error) {
	src, err := os.Open(binary)
	if err != nil {
		return "", err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", binary)
	}
	out, err := os.Create(layerPath)
	if err != nil {
		return "", err
	}
	defer out.Close()
	tw := tar.NewWriter(out)
	rel := strings.TrimPrefix(dest, "/")
	// Parent directories of the binary, if any.
	var dirs []string
	for d := path.Dir(rel); d != "."; d = path.Dir(d) {
		dirs = append([]string{d}, dirs...)
	}
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return "", err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o755, Size: fi.Size(), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return "", err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tw, h), src)
	if err != nil {
		return "", err
	}
	if n != fi.Size() {
		return "", fmt.Errorf("%s changed size while being read", binary)
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), out.Close()
}

// assemble makes a linux/amd64 OCI image of the layers at layerPaths.
func assemble(img Image, layerPaths []string, desc string) (v1.Image, error) {
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	var adds []mutate.Addendum
	for _, p := range layerPaths {
		layer, err := tarball.LayerFromFile(p, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.Addendum{
			Layer:     layer,
			MediaType: types.OCILayer,
			History:   v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "lotse: " + desc, Comment: "built by github.com/lotse/lotse/internal/images"},
		})
	}
	image, err := mutate.Append(base, adds...)
	if err != nil {
		return nil, err
	}
	cfg, err := image.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS = "linux"
	cfg.Architecture = "amd64"
	cfg.Created = v1.Time{Time: epoch}
	cfg.Author = "lotse"
	cfg.Config.Entrypoint = append([]string(nil), img.Entrypoint...)
	cfg.Config.Cmd = nil
	cfg.Config.User = img.User
	cfg.Config.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, img.Env...)
	cfg.Config.WorkingDir = "/"
	// No name or tag in the config: retagging keeps the image ID.
	cfg.Config.Labels = map[string]string{"dev.lotse.image.source": desc}
	return mutate.ConfigFile(image, cfg)
}

// checkStaticAMD64 refuses binaries the image cannot run: the image has no
// libc and no loader, and it is linux/amd64.
func checkStaticAMD64(binary string) error {
	f, err := elf.Open(binary)
	if err != nil {
		return fmt.Errorf("%s is not an ELF executable: %w", binary, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("%s is built for %s, the image is linux/amd64", binary, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; the image has no libc, build it statically (CGO_ENABLED=0, or gcc -static)", binary)
		}
	}
	return nil
}

// ---- pause ----------------------------------------------------------------

// pauseCFlags are upstream's (build/pause/Makefile: CFLAGS = -Os -Wall
// -Werror -static -DVERSION=v$(TAG)-$(REV)), with the Kubernetes version the
// source came from as REV.
func pauseCFlags(img Image) []string {
	return []string{"-Os", "-Wall", "-Werror", "-static", "-DVERSION=v" + img.Tag + "-" + img.Source}
}

func (b *Builder) buildPause(ctx context.Context, img Image) (string, error) {
	log := b.log()
	dir := filepath.Join(b.cacheDir(), "build", "pause-"+img.Tag)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		return "", fmt.Errorf("the pause image is compiled from C, but gcc is not installed (install gcc and libc6-dev): %w", err)
	}
	fmt.Fprintf(log, "==> pause %s: fetching k8s.io/kubernetes@%s source\n", img.Tag, img.Source)
	mod, err := gobuild.Download(ctx, dir, "k8s.io/kubernetes@"+img.Source, log)
	if err != nil {
		return "", err
	}
	src, err := os.ReadFile(filepath.Join(mod.Dir, "build", "pause", "linux", "pause.c"))
	if err != nil {
		return "", fmt.Errorf("k8s.io/kubernetes@%s has no build/pause/linux/pause.c; the pause recipe needs updating: %w", img.Source, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pause.c"), src, 0o644); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "pause")
	// A private output directory: a compiler orphaned by a killed build
	// can never overwrite what a later build produced.
	tmpDir, err := os.MkdirTemp(dir, ".out-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "pause")
	args := append(pauseCFlags(img), "-o", tmp, "pause.c")
	fmt.Fprintf(log, "==> pause %s: gcc %s\n", img.Tag, strings.Join(pauseCFlags(img), " "))
	cmd := gobuild.Command(ctx, gcc, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	output, err := cmd.CombinedOutput()
	if len(output) > 0 {
		log.Write(output)
	}
	if err != nil {
		return "", fmt.Errorf("compiling pause.c with gcc failed (a static build needs libc6-dev): %w\n%s", err, strings.TrimSpace(string(output)))
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	return out, nil
}

// ---- CoreDNS --------------------------------------------------------------

// CoreDNSPlugins are the CoreDNS plugins compiled in: what kubeadm's
// Corefile uses (errors, health, ready, kubernetes, prometheus, forward,
// cache, loop, reload, loadbalance) and a few that help debugging or custom
// zones (log, hosts, whoami). The build orders them as upstream's
// core/dnsserver/zdirectives.go does.
var CoreDNSPlugins = []string{
	"errors", "health", "ready", "kubernetes", "cache", "loop", "reload",
	"loadbalance", "log", "prometheus", "forward", "hosts", "whoami",
}

// corednsPluginPackage maps the plugins whose package is not plugin/<name>.
var corednsPluginPackage = map[string]string{"prometheus": "metrics"}

func (b *Builder) buildCoreDNS(ctx context.Context, img Image) (string, error) {
	log := b.log()
	dir := filepath.Join(b.cacheDir(), "build", "coredns-"+img.Source)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	fmt.Fprintf(log, "==> coredns %s: fetching github.com/coredns/coredns@%s\n", img.Source, img.Source)
	mod, err := gobuild.Download(ctx, dir, "github.com/coredns/coredns@"+img.Source, log)
	if err != nil {
		return "", err
	}
	upstreamMod, err := os.ReadFile(mod.GoMod)
	if err != nil {
		return "", err
	}
	zdirectives, err := os.ReadFile(filepath.Join(mod.Dir, "core", "dnsserver", "zdirectives.go"))
	if err != nil {
		return "", fmt.Errorf("coredns %s has no core/dnsserver/zdirectives.go; the CoreDNS recipe needs updating: %w", img.Source, err)
	}
	directives, err := orderedDirectives(zdirectives, CoreDNSPlugins)
	if err != nil {
		return "", fmt.Errorf("coredns %s: %w", img.Source, err)
	}
	for _, d := range directives {
		if _, err := os.Stat(filepath.Join(mod.Dir, filepath.FromSlash(corednsPluginDir(d)))); err != nil {
			return "", fmt.Errorf("coredns %s has no package for plugin %q; the CoreDNS recipe needs updating: %w", img.Source, d, err)
		}
	}
	gomod, err := corednsWorkModule(upstreamMod, img.Source)
	if err != nil {
		return "", err
	}
	if err := fsutil.WriteIfChanged(filepath.Join(dir, "go.mod"), gomod, 0o644); err != nil {
		return "", err
	}
	if err := fsutil.WriteIfChanged(filepath.Join(dir, "main.go"), corednsMain(directives), 0o644); err != nil {
		return "", err
	}
	fmt.Fprintf(log, "==> coredns %s: resolving modules\n", img.Source)
	if err := gobuild.Go(ctx, dir, log, "mod", "tidy"); err != nil {
		return "", fmt.Errorf("go mod tidy for coredns %s: %w", img.Source, err)
	}
	fmt.Fprintf(log, "==> coredns %s: building with plugins %s\n", img.Source, strings.Join(directives, " "))
	out := filepath.Join(dir, "coredns")
	tmpDir, err := os.MkdirTemp(dir, ".out-") // see buildPause; go ignores dot directories
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "coredns")
	start := time.Now()
	ldflags := "-s -w -X github.com/coredns/coredns/coremain.GitCommit=lotse"
	if err := gobuild.Go(ctx, dir, log, "build", "-trimpath", "-ldflags", ldflags, "-o", tmp, "."); err != nil {
		return "", fmt.Errorf("go build coredns %s: %w", img.Source, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	fmt.Fprintf(log, "    built coredns in %s\n", time.Since(start).Round(100*time.Millisecond))
	return out, nil
}

func sortedLinks(links map[string]string) []string {
	out := make([]string, 0, len(links))
	for l := range links {
		out = append(out, l)
	}
	sort.Strings(out)
	return out
}

// buildGoModule builds img.Package of img.Module at img.Source in a
// generated work module, statically.
func (b *Builder) buildGoModule(ctx context.Context, img Image) (string, error) {
	log := b.log()
	dir := filepath.Join(b.cacheDir(), "build", img.Name+"-"+img.Source)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	fmt.Fprintf(log, "==> %s: fetching %s@%s\n", img.Name, img.Module, img.Source)
	mod, err := gobuild.Download(ctx, dir, img.Module+"@"+img.Source, log)
	if err != nil {
		return "", err
	}
	upstreamMod, err := os.ReadFile(mod.GoMod)
	if err != nil {
		return "", err
	}
	gomod, err := workModule(upstreamMod, img.Module, img.Source, img.Name+"build", img.Name+" built from its module")
	if err != nil {
		return "", err
	}
	if err := fsutil.WriteIfChanged(filepath.Join(dir, "go.mod"), gomod, 0o644); err != nil {
		return "", err
	}
	// No Go file of its own imports the package (a main package cannot be
	// imported), so go get records what building it needs.
	if err := gobuild.Go(ctx, dir, log, "get", img.Package+"@"+img.Source); err != nil {
		return "", fmt.Errorf("go get %s@%s: %w", img.Package, img.Source, err)
	}
	fmt.Fprintf(log, "==> %s: building %s\n", img.Name, img.Package)
	tmpDir, err := os.MkdirTemp(dir, ".out-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, img.Name)
	start := time.Now()
	if err := gobuild.Go(ctx, dir, log, "build", "-trimpath", "-ldflags", "-s -w", "-o", tmp, img.Package); err != nil {
		return "", fmt.Errorf("go build %s@%s: %w", img.Package, img.Source, err)
	}
	out := filepath.Join(dir, img.Name)
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	fmt.Fprintf(log, "    built %s in %s\n", img.Name, time.Since(start).Round(100*time.Millisecond))
	return out, nil
}

func corednsPluginDir(plugin string) string {
	pkg := plugin
	if p, ok := corednsPluginPackage[plugin]; ok {
		pkg = p
	}
	return "plugin/" + pkg
}

// ---- go and module helpers --------------------------------------------------

// FileSHA256 is the hex SHA-256 digest of a file's content.
func FileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
