package hostlimits

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEnsure(t *testing.T) {
	tests := []struct {
		name       string
		instances  string
		watches    string
		wantRaised int
		wantInst   string
	}{
		{"raises what is low", "128", "8192", 2, "8192"},
		{"never lowers", "65536", "1048576", 0, "65536"},
		{"raises only one", "128", "1048576", 1, "8192"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			procSys = dir
			t.Cleanup(func() { procSys = "/proc/sys" })
			write := func(key, v string) {
				p := filepath.Join(dir, strings.ReplaceAll(key, ".", "/"))
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			write("fs.inotify.max_user_instances", tt.instances)
			write("fs.inotify.max_user_watches", tt.watches)
			raised, err := Ensure()
			if err != nil {
				t.Fatal(err)
			}
			if len(raised) != tt.wantRaised {
				t.Errorf("raised %v, want %d limits", raised, tt.wantRaised)
			}
			got, _ := os.ReadFile(filepath.Join(dir, "fs", "inotify", "max_user_instances"))
			if strings.TrimSpace(string(got)) != tt.wantInst {
				t.Errorf("max_user_instances = %q, want %s", got, tt.wantInst)
			}
		})
	}
}
