package machine

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Class is a machine size: what a node of it offers to pods (its
// allocatable CPU and memory) and the limits its machine runs under, as a
// cloud's flavour or instance type does.
type Class struct {
	Name string
	// CPU in millicores and Memory in bytes are the node's allocatable;
	// zero: the host's (the local class, as big as the machine it runs on).
	CPU    int64
	Memory int64
}

const gib = 1 << 30

// Classes lists the machine classes, smallest first after local.
var Classes = []Class{
	{Name: "local"},
	{Name: "small", CPU: 1000, Memory: 2 * gib},
	{Name: "medium", CPU: 2000, Memory: 4 * gib},
	{Name: "large", CPU: 4000, Memory: 8 * gib},
}

// LookupClass finds a class by name ("" is local).
func LookupClass(name string) (Class, error) {
	if name == "" {
		name = "local"
	}
	for _, c := range Classes {
		if c.Name == name {
			return c, nil
		}
	}
	var names []string
	for _, c := range Classes {
		names = append(names, c.Name)
	}
	sort.Strings(names)
	return Class{}, fmt.Errorf("machine class %q is not known; classes: %s", name, strings.Join(names, ", "))
}

// AgentOverhead is the memory a machine's own processes (containerd,
// kubelet, kube-proxy, shims) get above its pods' allocatable.
const AgentOverhead = 512 << 20

// Allocatable is what a node of the class offers to pods on a host with
// hostCPU millicores and hostMemory bytes: the class's size, never more
// than the host has.
func (c Class) Allocatable(hostCPU, hostMemory int64) corev1.ResourceList {
	cpu, mem := hostCPU, hostMemory
	if c.CPU > 0 && c.CPU < cpu {
		cpu = c.CPU
	}
	if c.Memory > 0 && c.Memory < mem {
		mem = c.Memory
	}
	return corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewMilliQuantity(cpu, resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(mem, resource.BinarySI),
		corev1.ResourcePods:   *resource.NewQuantity(110, resource.DecimalSI),
	}
}

// Host returns this host's CPU (millicores) and memory (bytes), as the
// kubelet sees them.
func Host() (cpu, memory int64) {
	cpu = int64(runtime.NumCPU()) * 1000
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return cpu, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kib, _ := strconv.ParseInt(f[1], 10, 64)
			return cpu, kib * 1024
		}
	}
	return cpu, 0
}
