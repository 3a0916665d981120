package local

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCRILoadError(t *testing.T) {
	tests := []struct {
		name, log, want string
	}{
		{"no log", "", ""},
		{"the plugin loaded", `level=info msg="loading plugin \"io.containerd.grpc.v1.cri\"..."` + "\n" +
			`level=info msg="Start cri plugin with config {...}"`, ""},
		{"the plugin failed", `level=info msg="loading plugin \"io.containerd.grpc.v1.cri\"..."` + "\n" +
			`level=warning msg="failed to load plugin io.containerd.grpc.v1.cri" error="failed to create CRI service: boom"` + "\n" +
			`level=info msg="containerd successfully booted"`, "failed to create CRI service: boom"},
		{"other plugins' failures do not count", `level=warning msg="failed to load plugin io.containerd.snapshotter.v1.devmapper" error="devmapper not configured"`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "containerd.log")
			if tt.log != "" {
				if err := os.WriteFile(path, []byte(tt.log), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got := criLoadError(path)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("criLoadError = %q, want a line with %q", got, tt.want)
			}
		})
	}
}
