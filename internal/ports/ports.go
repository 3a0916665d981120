// Package ports hands out free TCP ports on loopback. Ports are never
// hard-coded in Lotse: each one is taken from the kernel and then recorded by
// whoever asked, so it stays stable across restarts.
package ports

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
)

var (
	mu     sync.Mutex
	handed = map[int]bool{} // ports given out by this process, never given twice
)

// Allocate returns n distinct free ports on 127.0.0.1. All n are held open
// while choosing, so they differ from each other, and this process never
// hands the same port out twice.
func Allocate(n int) ([]int, error) {
	mu.Lock()
	defer mu.Unlock()
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	out := make([]int, 0, n)
	for attempts := 0; len(out) < n; attempts++ {
		if attempts > 100*n {
			return nil, fmt.Errorf("could not find %d free ports on 127.0.0.1", n)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("allocate port: %w", err)
		}
		listeners = append(listeners, l)
		p := l.Addr().(*net.TCPAddr).Port
		if handed[p] {
			continue
		}
		handed[p] = true
		out = append(out, p)
	}
	return out, nil
}

// Free reports whether nothing listens on 127.0.0.1:port.
func Free(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// Registered-range bounds for AllocateRegistered: below the kernel's
// ephemeral range (32768-60999 by default), so an outgoing connection never
// holds one of them, and above the ports well-known services use.
const (
	registeredLow  = 20000
	registeredHigh = 32767
)

// AllocateRegistered returns n distinct free ports on 127.0.0.1 below the
// ephemeral range, for programs that refuse ephemeral ports (konnectivity
// wants 1024-49151). Like Allocate, it never hands a port out twice.
func AllocateRegistered(n int) ([]int, error) {
	mu.Lock()
	defer mu.Unlock()
	out := make([]int, 0, n)
	for attempts := 0; len(out) < n; attempts++ {
		if attempts > 1000*n {
			return nil, fmt.Errorf("could not find %d free ports in %d-%d on 127.0.0.1", n, registeredLow, registeredHigh)
		}
		p := registeredLow + rand.IntN(registeredHigh-registeredLow+1)
		if handed[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		handed[p] = true
		out = append(out, p)
	}
	return out, nil
}
