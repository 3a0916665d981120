package images

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lotse/lotse/internal/ports"
	"github.com/lotse/lotse/internal/releases"
)

// testLog sends build output to the test log, line by line.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Helper()
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// The pause image of every release, compiled for real with gcc in a fresh
// cache (it takes about a second).
func TestPause(t *testing.T) {
	for _, r := range releases.All() {
		t.Run(r.Version, func(t *testing.T) {
			img := ForRelease(r.Version).Pause
			b := &Builder{CacheDir: t.TempDir(), Log: testLog{t}}
			start := time.Now()
			p, stamp := ensure(t, b, img)
			cold := time.Since(start)
			start = time.Now()
			ensure(t, b, img)
			warm := time.Since(start)
			t.Logf("%s: cold %s, warm %s, tarball %d KiB, image %s", img, cold.Round(time.Millisecond), warm.Round(time.Millisecond), stamp.Size/1024, stamp.ImageID)
			if _, again := ensure(t, &Builder{CacheDir: t.TempDir()}, img); again.ImageID != stamp.ImageID {
				t.Errorf("a second gcc build gave image %s, the first %s", again.ImageID, stamp.ImageID)
			}

			_, cfg, files := readBack(t, p, img.Ref())
			if !reflect.DeepEqual(cfg.Config.Entrypoint, []string{"/pause"}) || cfg.Config.User != "65535:65535" {
				t.Errorf("entrypoint %q user %q", cfg.Config.Entrypoint, cfg.Config.User)
			}
			if len(files) != 1 {
				t.Errorf("layer has %d entries, want only pause", len(files))
			}
			pause := extract(t, files, "pause", t.TempDir())
			if err := checkStaticAMD64(pause); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(pause, "-v").CombinedOutput()
			if want := fmt.Sprintf("pause.c v%s-%s\n", img.Tag, img.Source); err != nil || string(out) != want {
				t.Errorf("pause -v = %q, %v; want %q", out, err, want)
			}

			// It waits for a signal and exits 0 on SIGTERM.
			cmd := exec.Command(pause)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil || !strings.Contains(stderr.String(), "Shutting down, got signal") {
					t.Errorf("pause on SIGTERM: %v, stderr %q", err, stderr.String())
				}
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-done
				t.Error("pause ignored SIGTERM")
			}
		})
	}
}

// The CoreDNS image of every release, built in the shared cache
// (releases.DefaultCacheDir()): the first run compiles CoreDNS, a few
// minutes each; later runs find the stamped tarball and take milliseconds.
func TestCoreDNS(t *testing.T) {
	for _, r := range releases.All() {
		t.Run(r.Version, func(t *testing.T) {
			img := ForRelease(r.Version).CoreDNS
			b := &Builder{CacheDir: releases.DefaultCacheDir(), Log: testLog{t}}
			start := time.Now()
			p, stamp := ensure(t, b, img)
			first := time.Since(start)
			start = time.Now()
			ensure(t, b, img)
			warm := time.Since(start)
			t.Logf("%s: first Ensure %s, warm %s, tarball %d KiB, image %s", img, first.Round(time.Millisecond), warm.Round(time.Millisecond), stamp.Size/1024, stamp.ImageID)
			if warm > 5*time.Second {
				t.Errorf("a cached Ensure took %s", warm)
			}

			_, cfg, files := readBack(t, p, img.Ref())
			if !reflect.DeepEqual(cfg.Config.Entrypoint, []string{"/coredns"}) {
				t.Errorf("entrypoint %q", cfg.Config.Entrypoint)
			}
			coredns := extract(t, files, "coredns", t.TempDir())
			if err := checkStaticAMD64(coredns); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(coredns, "-version").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "CoreDNS-"+strings.TrimPrefix(img.Source, "v")) {
				t.Errorf("coredns -version = %q, %v", out, err)
			}
			out, err = exec.Command(coredns, "-plugins").CombinedOutput()
			if err != nil {
				t.Fatalf("coredns -plugins: %v\n%s", err, out)
			}
			// One registered plugin a line. Packages the wanted plugins import
			// register a few more (metadata, transfer, dnstap, debug); they are
			// not in the directive list, so a Corefile cannot use them.
			plugins := strings.Fields(string(out))
			for _, want := range CoreDNSPlugins {
				if !slices.Contains(plugins, want) {
					t.Errorf("plugin %s missing from coredns -plugins: %q", want, plugins)
				}
			}
			for _, unwanted := range []string{"route53", "azure", "clouddns", "etcd", "grpc", "nomad", "sign", "file", "auto", "secondary", "rewrite", "template", "geoip"} {
				if slices.Contains(plugins, unwanted) {
					t.Errorf("plugin %s is compiled in", unwanted)
				}
			}
			t.Logf("plugins: %s", strings.Join(plugins, " "))
			serveKubeadmCorefile(t, coredns)
		})
	}
}

// serveKubeadmCorefile runs the binary with kubeadm's Corefile (pointed at a
// Kubernetes API that is not there, and with a hosts block added) and checks
// it answers DNS, /health and /metrics: every directive parses and the
// reduced directive list is usable.
func serveKubeadmCorefile(t *testing.T, coredns string) {
	// Below the ephemeral range: the DNS port takes UDP on every address
	// too, where a TCP check says nothing and another test's DNS client
	// may hold an ephemeral UDP port.
	p, err := ports.AllocateRegistered(5)
	if err != nil {
		t.Fatal(err)
	}
	dns, health, ready, metrics, closed := p[0], p[1], p[2], p[3], p[4]
	corefile := fmt.Sprintf(`.:%d {
    errors
    health 127.0.0.1:%d {
       lameduck 1s
    }
    ready 127.0.0.1:%d
    log
    hosts {
       10.11.12.13 web.lotse.test
       fallthrough
    }
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       endpoint http://127.0.0.1:%d
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus 127.0.0.1:%d
    forward . 127.0.0.1:%d {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
`, dns, health, ready, closed, metrics, closed)
	dir := t.TempDir()
	conf := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(conf, []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	// Written by exec's copying goroutine while the test reads it.
	var output syncBuffer
	cmd := exec.Command(coredns, "-conf", conf)
	cmd.Dir = dir
	cmd.Stdout = &output
	cmd.Stderr = &output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	defer stop()

	client := &http.Client{Timeout: 2 * time.Second}
	healthy := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("coredns exited: %v\n%s", err, output.String())
		default:
		}
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/health", health))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				healthy = true
				break
			}
		}
	}
	if !healthy {
		t.Fatalf("coredns never became healthy:\n%s", output.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", dns))
	}}
	// The DNS server starts once the kubernetes plugin gave up waiting for
	// the API (5s), after /health is already up.
	var addrs []string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		if addrs, err = resolver.LookupHost(ctx, "web.lotse.test"); err == nil {
			break
		}
	}
	if err != nil || !reflect.DeepEqual(addrs, []string{"10.11.12.13"}) {
		t.Errorf("lookup web.lotse.test = %q, %v\n%s", addrs, err, output.String())
	}
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metrics))
	if err != nil {
		t.Errorf("metrics: %v", err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Contains(body, []byte("coredns_dns_requests_total")) {
			t.Errorf("metrics have no coredns_dns_requests_total")
		}
	}
	stop()
	if t.Failed() {
		t.Logf("coredns output:\n%s", output.String())
	}
	t.Logf("coredns after SIGTERM: %s", cmd.ProcessState)
}
