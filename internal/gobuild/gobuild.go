// Package gobuild runs the `go` command for Lotse's builders (upstream
// Kubernetes and etcd releases, node images) in their own generated work
// modules: static linux/amd64 binaries, the local toolchain, the work
// module's go.mod, and a cancelled build that stops with all its children.
package gobuild

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Command prepares a command that runs in its own process group, so that
// cancelling ctx kills it together with every compiler it started.
func Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// Env is the environment of the builders' go commands: static
// linux/amd64 binaries, the local toolchain (no toolchain downloads), and the
// work module's own go.mod (never a go.work around it).
func Env() []string {
	env := []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOTOOLCHAIN=local", "GOFLAGS=-mod=mod", "GOWORK=off"}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "CGO_ENABLED", "GOOS", "GOARCH", "GOTOOLCHAIN", "GOFLAGS", "GOWORK":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// Go runs `go ARGS...` in dir with Env, its output going to log.
func Go(ctx context.Context, dir string, log io.Writer, args ...string) error {
	cmd := Command(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = Env()
	cmd.Stdout = log
	cmd.Stderr = log
	return cmd.Run()
}

// Module is a module version in the module cache.
type Module struct {
	Dir, GoMod, Error string
}

// Download fetches module@version into the module cache.
func Download(ctx context.Context, dir, modAtVersion string, log io.Writer) (Module, error) {
	cmd := Command(ctx, "go", "mod", "download", "-json", modAtVersion)
	cmd.Dir = dir
	cmd.Env = Env()
	cmd.Stderr = log
	out, err := cmd.Output()
	var info Module
	if jerr := json.Unmarshal(out, &info); jerr == nil && info.Error != "" {
		return info, fmt.Errorf("go mod download %s: %s", modAtVersion, info.Error)
	}
	if err != nil {
		return info, fmt.Errorf("go mod download %s: %w", modAtVersion, err)
	}
	if info.Dir == "" || info.GoMod == "" {
		return info, fmt.Errorf("go mod download %s: no source directory in %s", modAtVersion, out)
	}
	return info, nil
}
