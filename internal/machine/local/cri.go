package local

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// removePods stops and removes every pod sandbox through the CRI, so
// containerd tears down each pod's network (CNI DEL, its netns mount)
// before the machine's processes are killed.
func removePods(ctx context.Context, socket string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	list, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return err
	}
	var errs []error
	for _, sb := range list.Items {
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// criReady asks containerd's CRI for its version: it answers only once
// the CRI plugin is serving.
func criReady(ctx context.Context, socket string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{})
	return err
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// criLoadError returns the last line of a containerd log that says why
// its CRI plugin did not load ("" if none does): a containerd that
// answers without the CRI service ("unknown service
// runtime.v1.RuntimeService") logged it once, at its start.
func criLoadError(logFile string) string {
	data, err := os.ReadFile(logFile)
	if err != nil {
		return ""
	}
	var last string
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "io.containerd.grpc.v1.cri") && (strings.Contains(line, "level=error") || strings.Contains(line, "level=fatal") ||
			strings.Contains(line, "failed to load plugin")) {
			last = line
		}
	}
	if len(last) > 400 {
		last = last[:400] + "..."
	}
	return last
}
