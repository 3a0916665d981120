package images

import (
	"github.com/lotse/lotse/internal/gobuild"

	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lotse/lotse/internal/releases"
)

func TestForRelease(t *testing.T) {
	tests := []struct {
		version     string
		pause       string
		pauseSource string
		coredns     string
	}{
		{"1.37.2", "registry.lotse.local/pause:3.10.2", "v1.36.3", "registry.lotse.local/coredns:v1.14.6"},
		{"1.36.3", "registry.lotse.local/pause:3.10.2", "v1.36.3", "registry.lotse.local/coredns:v1.14.2"},
		{"v1.36.3", "registry.lotse.local/pause:3.10.2", "v1.36.3", "registry.lotse.local/coredns:v1.14.2"},
		{"1.35.4", "registry.lotse.local/pause:3.10.1", "v1.35.4", "registry.lotse.local/coredns:v1.13.1"},
		// Another patch of a known minor gets that minor's images.
		{"1.36.0", "registry.lotse.local/pause:3.10.2", "v1.36.3", "registry.lotse.local/coredns:v1.14.2"},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			s := ForRelease(tt.version)
			if got := s.Pause.Ref(); got != tt.pause {
				t.Errorf("pause = %q, want %q", got, tt.pause)
			}
			if s.Pause.Kind != KindPause || s.Pause.Source != tt.pauseSource {
				t.Errorf("pause kind/source = %s/%s, want pause/%s", s.Pause.Kind, s.Pause.Source, tt.pauseSource)
			}
			if !reflect.DeepEqual(s.Pause.Entrypoint, []string{"/pause"}) || s.Pause.User != "65535:65535" {
				t.Errorf("pause entrypoint/user = %q/%q", s.Pause.Entrypoint, s.Pause.User)
			}
			if got := s.CoreDNS.Ref(); got != tt.coredns {
				t.Errorf("coredns = %q, want %q", got, tt.coredns)
			}
			if s.CoreDNS.Kind != KindCoreDNS || s.CoreDNS.Source != s.CoreDNS.Tag {
				t.Errorf("coredns kind/source = %s/%s, want coredns/%s", s.CoreDNS.Kind, s.CoreDNS.Source, s.CoreDNS.Tag)
			}
			if !reflect.DeepEqual(s.Refs(), []string{tt.pause, tt.coredns}) {
				t.Errorf("Refs() = %q", s.Refs())
			}
			for _, img := range s.All() {
				if err := img.validate(); err != nil {
					t.Errorf("%s: %v", img, err)
				}
			}
		})
	}
}

func TestForReleaseUnknown(t *testing.T) {
	for _, v := range []string{"1.20.0", "2.36.3", "1.36", "", "latest"} {
		t.Run(v, func(t *testing.T) {
			if s := ForRelease(v); !reflect.DeepEqual(s, Set{}) {
				t.Errorf("ForRelease(%q) = %+v, want the zero Set", v, s)
			}
			if _, err := Lookup(v); err == nil {
				t.Errorf("Lookup(%q) succeeded", v)
			}
			if err := ForRelease(v).Pause.validate(); err == nil {
				t.Errorf("the zero Set's pause image validates")
			}
		})
	}
}

// Every release Lotse can run needs its node images.
func TestEveryReleaseHasImages(t *testing.T) {
	for _, r := range releases.All() {
		if _, err := Lookup(r.Version); err != nil {
			t.Errorf("release %s: %v", r.Version, err)
		}
	}
}

func TestRefs(t *testing.T) {
	tests := []struct{ got, want string }{
		{PauseRef("3.10.2"), "registry.lotse.local/pause:3.10.2"},
		{CoreDNSRef("v1.14.2"), "registry.lotse.local/coredns:v1.14.2"},
		{Ref("echo", "v1"), "registry.lotse.local/echo:v1"},
		{CoreDNS("1.14.2").Ref(), "registry.lotse.local/coredns:v1.14.2"},
		{Pause("3.10.2", "1.36.3").Source, "v1.36.3"},
		{FromBinary("echo", "v1", "/bin/echo", nil).Entrypoint[0], "/echo"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		img  Image
		ok   bool
	}{
		{"binary", FromBinary("echo", "v1", "/x/echo", []string{"/echo", "serve"}), true},
		{"nested entrypoint", FromBinary("echo", "v1", "/x/echo", []string{"/usr/local/bin/echo"}), true},
		{"relative entrypoint", FromBinary("echo", "v1", "/x/echo", []string{"echo"}), false},
		{"unclean entrypoint", FromBinary("echo", "v1", "/x/echo", []string{"/bin/../echo"}), false},
		{"root entrypoint", FromBinary("echo", "v1", "/x/echo", []string{"/"}), false},
		{"no binary", FromBinary("echo", "v1", "", nil), false},
		{"no tag", FromBinary("echo", "", "/x/echo", nil), false},
		{"bad tag", FromBinary("echo", "v1:2", "/x/echo", nil), false},
		{"upper-case name", FromBinary("Echo", "v1", "/x/echo", nil), false},
		{"name with slash", FromBinary("a/b", "v1", "/x/echo", []string{"/b"}), false},
		{"pause", Pause("3.10.2", "1.36.3"), true},
		{"pause without source", Image{Name: "pause", Tag: "3.10.2", Kind: KindPause, Entrypoint: []string{"/pause"}}, false},
		{"unknown kind", Image{Name: "x", Tag: "1", Kind: "docker", Entrypoint: []string{"/x"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.img.validate()
			if (err == nil) != tt.ok {
				t.Errorf("validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// The image catalog must follow what kubeadm of each release deploys.
func TestCatalogMatchesKubeadm(t *testing.T) {
	pauseRe := regexp.MustCompile(`(?m)^\s*PauseVersion\s*=\s*"([^"]+)"`)
	corednsRe := regexp.MustCompile(`(?m)^\s*CoreDNSVersion\s*=\s*"([^"]+)"`)
	makeTagRe := regexp.MustCompile(`(?m)^TAG\s*\?=\s*(\S+)`)
	for _, r := range releases.All() {
		t.Run(r.Version, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			mod, err := gobuild.Download(ctx, t.TempDir(), "k8s.io/kubernetes@v"+r.Version, os.Stderr)
			if err != nil {
				t.Fatal(err)
			}
			src, err := os.ReadFile(filepath.Join(mod.Dir, "cmd", "kubeadm", "app", "constants", "constants.go"))
			if err != nil {
				t.Fatal(err)
			}
			s := ForRelease(r.Version)
			if m := pauseRe.FindSubmatch(src); m == nil || string(m[1]) != s.Pause.Tag {
				t.Errorf("kubeadm %s PauseVersion = %q, catalog has %q", r.Version, m, s.Pause.Tag)
			}
			if m := corednsRe.FindSubmatch(src); m == nil || string(m[1]) != s.CoreDNS.Tag {
				t.Errorf("kubeadm %s CoreDNSVersion = %q, catalog has %q", r.Version, m, s.CoreDNS.Tag)
			}
			// The pause source must be a release of the catalog (the same
			// tag may serve several minors, built once) whose
			// build/pause/Makefile tags pause as the catalog does.
			if !slices.Contains(releases.Versions(), strings.TrimPrefix(s.Pause.Source, "v")) {
				t.Errorf("pause source %s is not a release of the catalog %v", s.Pause.Source, releases.Versions())
			}
			pmod, err := gobuild.Download(ctx, t.TempDir(), "k8s.io/kubernetes@"+s.Pause.Source, os.Stderr)
			if err != nil {
				t.Fatal(err)
			}
			makefile, err := os.ReadFile(filepath.Join(pmod.Dir, "build", "pause", "Makefile"))
			if err != nil {
				t.Fatal(err)
			}
			if m := makeTagRe.FindSubmatch(makefile); m == nil || string(m[1]) != s.Pause.Tag {
				t.Errorf("k8s.io/kubernetes@%s build/pause/Makefile TAG = %q, catalog has %q", s.Pause.Source, m, s.Pause.Tag)
			}
		})
	}
}

// The CoreDNS version of every release is on the module proxy.
func TestCoreDNSVersionsResolve(t *testing.T) {
	for _, r := range releases.All() {
		v := ForRelease(r.Version).CoreDNS.Source
		cmd := exec.Command("go", "mod", "download", "-json", "github.com/coredns/coredns@"+v)
		cmd.Dir = t.TempDir()
		cmd.Env = gobuild.Env()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("coredns %s (release %s): %v\n%s", v, r.Version, err, out)
		}
	}
}

func TestPreviousMinor(t *testing.T) {
	tests := []struct {
		version, coredns string
		ok               bool
	}{
		{"1.37.2", "registry.lotse.local/coredns:v1.14.2", true},
		{"1.36.3", "registry.lotse.local/coredns:v1.13.1", true},
		{"1.35.4", "", false}, // 1.34 is not in the catalog
		{"junk", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			s, ok := PreviousMinor(tt.version)
			if ok != tt.ok || (ok && s.CoreDNS.Ref() != tt.coredns) {
				t.Errorf("PreviousMinor(%s) = %s, %v; want %s, %v", tt.version, s.CoreDNS.Ref(), ok, tt.coredns, tt.ok)
			}
		})
	}
}
