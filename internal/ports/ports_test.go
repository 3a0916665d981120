package ports

import (
	"net"
	"strconv"
	"testing"
)

func TestAllocate(t *testing.T) {
	tests := []struct {
		name     string
		allocate func(int) ([]int, error)
		lo, hi   int
	}{
		{"ephemeral", Allocate, 1, 65535},
		{"registered", AllocateRegistered, registeredLow, registeredHigh},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := map[int]bool{}
			for round := 0; round < 3; round++ {
				ps, err := tt.allocate(5)
				if err != nil {
					t.Fatal(err)
				}
				if len(ps) != 5 {
					t.Fatalf("got %d ports, want 5", len(ps))
				}
				for _, p := range ps {
					if seen[p] {
						t.Errorf("port %d handed out twice", p)
					}
					seen[p] = true
					if p < tt.lo || p > tt.hi {
						t.Errorf("port %d outside %d-%d", p, tt.lo, tt.hi)
					}
					l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
					if err != nil {
						t.Errorf("port %d is not free: %v", p, err)
						continue
					}
					l.Close()
				}
			}
		})
	}
}
