package machine

import (
	"strings"
	"testing"
)

func TestClasses(t *testing.T) {
	const gi = int64(1) << 30
	tests := []struct {
		class            string
		hostCPU, hostMem int64
		wantCPU, wantMem int64
		wantErr          string
	}{
		{"small", 2000, 24 * gi, 1000, 2 * gi, ""},
		{"medium", 2000, 24 * gi, 2000, 4 * gi, ""},
		{"large", 2000, 24 * gi, 2000, 8 * gi, ""}, // never more than the host has
		{"local", 2000, 24 * gi, 2000, 24 * gi, ""},
		{"", 2000, 24 * gi, 2000, 24 * gi, ""},
		{"huge", 0, 0, 0, 0, `machine class "huge" is not known; classes: large, local, medium, small`},
	}
	for _, tt := range tests {
		t.Run(tt.class, func(t *testing.T) {
			c, err := LookupClass(tt.class)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("LookupClass = %v, %v; want %q", c, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			a := c.Allocatable(tt.hostCPU, tt.hostMem)
			if a.Cpu().MilliValue() != tt.wantCPU || a.Memory().Value() != tt.wantMem {
				t.Errorf("allocatable = %s / %s, want %dm / %d", a.Cpu(), a.Memory(), tt.wantCPU, tt.wantMem)
			}
		})
	}
	if cpu, mem := Host(); cpu <= 0 || mem <= 0 {
		t.Errorf("Host() = %d, %d", cpu, mem)
	}
}
