// Package s3test runs a real S3 server for tests: versitygw with its POSIX
// backend on a temporary directory, on loopback. versitygw is built once
// from the Go module proxy into the Lotse cache
// ($LOTSE_CACHE_DIR/tools/versitygw-VERSION/versitygw).
package s3test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/lotse/lotse/internal/fsutil"
	"github.com/lotse/lotse/internal/gobuild"
	"github.com/lotse/lotse/internal/ports"
	"github.com/lotse/lotse/internal/releases"
)

// Version is the versitygw release the tests run.
const Version = "1.8.0"

const (
	module = "github.com/versity/versitygw"
	cmdPkg = module + "/cmd/versitygw"
)

// Server is a running S3 server. Bucket exists and is empty.
type Server struct {
	Endpoint        string // http://127.0.0.1:PORT
	AccessKeyID     string
	SecretAccessKey string
	Bucket          string

	proc *process
}

// Stop ends the server (SIGTERM, then SIGKILL) and waits for it. It is
// registered as a cleanup, and tests may call it earlier to see what a
// client does when the server is gone.
func (s Server) Stop() {
	if s.proc != nil {
		s.proc.stop()
	}
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	once sync.Once
}

func (p *process) stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}

// Start builds versitygw if needed, runs it on a fresh directory and
// creates Server.Bucket. The server stops when the test ends.
func Start(t testing.TB) Server {
	t.Helper()
	bin, err := Binary(t)
	if err != nil {
		t.Fatalf("versitygw: %v", err)
	}
	p, err := ports.Allocate(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", p[0])
	srv := Server{
		Endpoint:        "http://" + addr,
		AccessKeyID:     "lotse" + randomHex(t, 8),
		SecretAccessKey: randomHex(t, 20),
		Bucket:          "lotse-test",
	}
	root := t.TempDir()
	logf, err := os.Create(filepath.Join(t.TempDir(), "versitygw.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })

	cmd := exec.Command(bin, "--port", addr, "posix", root)
	cmd.Env = append(serverEnv(), "ROOT_ACCESS_KEY_ID="+srv.AccessKeyID, "ROOT_SECRET_ACCESS_KEY="+srv.SecretAccessKey)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// The server dies with the test process, however that ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
	proc := &process{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(proc.done) }()
	srv.proc = proc
	t.Cleanup(proc.stop)

	client, err := minio.New(addr, &minio.Options{
		Creds:        credentials.NewStaticV4(srv.AccessKeyID, srv.SecretAccessKey, ""),
		Region:       "us-east-1",
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   1,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, err = client.ListBuckets(ctx)
		if err == nil {
			break
		}
		select {
		case <-proc.done:
			t.Fatalf("versitygw exited before answering: %v\n%s", cmd.ProcessState, readLog(logf.Name()))
		case <-ctx.Done():
			t.Fatalf("versitygw at %s did not answer within 30s: %v\n%s", srv.Endpoint, err, readLog(logf.Name()))
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := client.MakeBucket(ctx, srv.Bucket, minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
		t.Fatalf("create bucket %s: %v\n%s", srv.Bucket, err, readLog(logf.Name()))
	}
	return srv
}

// serverEnv is the test's environment without versitygw's own settings,
// so that nothing from the outside changes the server the tests expect.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "VGW_") || strings.HasPrefix(k, "ROOT_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func readLog(path string) string {
	b, _ := os.ReadFile(path)
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// Binary returns the path of the versitygw binary, building it first if
// the cache does not hold it yet. Concurrent test processes build it once.
func Binary(t testing.TB) (string, error) {
	t.Helper()
	cache := releases.DefaultCacheDir()
	bin := filepath.Join(cache, "tools", "versitygw-"+Version, "versitygw")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	buildDir := filepath.Join(cache, "build", "versitygw-"+Version)
	if err := os.MkdirAll(buildDir, 0o755); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	unlock, err := fsutil.Lock(ctx, filepath.Join(buildDir, ".lock"))
	if err != nil {
		return "", fmt.Errorf("lock %s: %w", buildDir, err)
	}
	defer unlock()
	// Another process may have built it while we waited for the lock.
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	t.Logf("building versitygw %s into %s (once)", Version, bin)
	start := time.Now()
	var log bytes.Buffer
	if err := build(ctx, buildDir, bin, &log); err != nil {
		return "", fmt.Errorf("%w\n%s", err, tail(log.String(), 4000))
	}
	t.Logf("built versitygw %s in %s", Version, time.Since(start).Round(time.Second))
	return bin, nil
}

func build(ctx context.Context, dir, bin string, log io.Writer) error {
	gomod := fmt.Sprintf(`// Generated by lotse: builds the S3 server the backup tests run.
module lotse.local/versitygwbuild

go 1.26.0

require %s v%s

tool %s
`, module, Version, cmdPkg)
	if err := fsutil.WriteIfChanged(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
		return err
	}
	if err := gobuild.Go(ctx, dir, log, "mod", "tidy"); err != nil {
		return fmt.Errorf("go mod tidy for versitygw %s in %s: %w", Version, dir, err)
	}
	tmp := bin + ".tmp"
	ldflags := "-s -w -X main.Version=v" + Version
	if err := gobuild.Go(ctx, dir, log, "build", "-trimpath", "-ldflags", ldflags, "-o", tmp, cmdPkg); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("go build %s: %w", cmdPkg, err)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	return nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
