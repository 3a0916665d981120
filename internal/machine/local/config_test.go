package local

import (
	"fmt"
	"strings"
	"testing"

	"github.com/lotse/lotse/internal/machine"
)

// A sized class reserves everything of the host beyond the class, so the
// kubelet reports the class as allocatable (capacity - reserved - the
// eviction threshold).
func TestSystemReserved(t *testing.T) {
	if got := systemReserved(machine.Class{Name: "local"}); got != "" {
		t.Errorf("local class reserves %q, want nothing", got)
	}
	small, _ := machine.LookupClass("small")
	hostCPU, hostMem := machine.Host()
	got := systemReserved(small)
	want := fmt.Sprintf("systemReserved: {cpu: \"%dm\", memory: \"%d\"}", hostCPU-1000, hostMem-2<<30-evictionMemory)
	if !strings.Contains(got, want) {
		t.Errorf("systemReserved(small) = %q, want %q", got, want)
	}
	if cfg := kubeletConfig(&Machine{Spec: machine.Spec{Class: small}}); !strings.Contains(cfg, want) {
		t.Errorf("kubelet config of a small machine lacks %q:\n%s", want, cfg)
	}
}
