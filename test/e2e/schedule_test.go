package e2e

import (
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// longestFirst names the parallel tests from the longest to the shortest
// (their times in a full run). They start in this order: the long ones
// first, so the run ends with short tests filling the slots rather than
// with one long test that happened to start last (a cold CI run took 11
// minutes longer when TestSeed drew a late slot). A test not listed starts
// after the listed ones.
var longestFirst = []string{
	"TestSeed",
	"TestAddons",
	"TestCARotation",
	"TestUpgrade",
	"TestHibernation",
	"TestMachineRepair",
	"TestFleetDNS",
	"TestSharedDatastore",
	"TestFleetWithNodes",
	"TestFleetPullMember",
	"TestCare",
	"TestCredentialRotation",
	"TestTunnel",
	"TestFleetPropagation",
	"TestDashboard",
	"TestAutoscaling",
	"TestBackupRestore",
	"TestWorkerPools",
	"TestMakeHighlyAvailable",
	"TestProjects",
	"TestHighAvailability",
	"TestClusterLifecycle",
	"TestMaintenance",
}

// parallel marks a top-level test parallel and waits for one of the run's
// slots (LOTSE_E2E_PARALLEL, default 3: more starve each other on two
// cores), handed out in the order of longestFirst. The slot is given back
// after the test's cleanups (its cluster deleted). go test's own -parallel
// is set high by make e2e, so this is the limit that counts.
func parallel(t *testing.T) {
	t.Parallel()
	asked := time.Now()
	t.Cleanup(slots.acquire(t.Name()))
	// go test's time for the test includes this wait; the log tells it
	// apart (longestFirst is ordered by the time after it).
	t.Logf("started after %s waiting for a slot", time.Since(asked).Round(time.Second))
}

var slots = newSlotScheduler(e2eParallelism(), time.Second)

func e2eParallelism() int {
	if n, err := strconv.Atoi(os.Getenv("LOTSE_E2E_PARALLEL")); err == nil && n > 0 {
		return n
	}
	return 3
}

// slotScheduler hands out a fixed number of slots, highest priority first.
// go test releases all parallel tests at once; the first grant waits a
// moment (settle) so that they have all asked by then.
type slotScheduler struct {
	mu      sync.Mutex
	free    int
	settle  time.Duration
	opened  bool
	timer   *time.Timer
	waiting []*slotWaiter
}

type slotWaiter struct {
	rank    int
	granted chan struct{}
}

func newSlotScheduler(n int, settle time.Duration) *slotScheduler {
	return &slotScheduler{free: n, settle: settle}
}

// rank is a test's place in longestFirst; unlisted tests come after.
func rank(name string) int {
	if i := slices.Index(longestFirst, name); i >= 0 {
		return i
	}
	return len(longestFirst)
}

// acquire blocks until the test named has a slot and returns its release.
func (s *slotScheduler) acquire(name string) func() {
	w := &slotWaiter{rank: rank(name), granted: make(chan struct{})}
	s.mu.Lock()
	s.waiting = append(s.waiting, w)
	if s.timer == nil {
		s.timer = time.AfterFunc(s.settle, func() {
			s.mu.Lock()
			s.opened = true
			s.grantLocked()
			s.mu.Unlock()
		})
	}
	s.grantLocked()
	s.mu.Unlock()
	<-w.granted
	return func() {
		s.mu.Lock()
		s.free++
		s.grantLocked()
		s.mu.Unlock()
	}
}

func (s *slotScheduler) grantLocked() {
	if !s.opened {
		return
	}
	for s.free > 0 && len(s.waiting) > 0 {
		// Stable: of equal ranks, the one that asked first.
		best := 0
		for i, w := range s.waiting {
			if w.rank < s.waiting[best].rank {
				best = i
			}
		}
		w := s.waiting[best]
		s.waiting = slices.Delete(s.waiting, best, best+1)
		s.free--
		close(w.granted)
	}
}

// TestSlotScheduler: the harness's own ordering, checked without clusters.
func TestSlotScheduler(t *testing.T) {
	s := newSlotScheduler(1, 50*time.Millisecond)
	order := make(chan string, 4)
	var wg sync.WaitGroup
	// Asked in the opposite order of their ranks, all within the settle
	// time; one slot, so each starts after the one before it ended.
	for _, name := range []string{"TestUnlisted", "TestMaintenance", "TestAddons", "TestSeed"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			release := s.acquire(name)
			order <- name
			release()
		}()
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	close(order)
	var got []string
	for name := range order {
		got = append(got, name)
	}
	want := []string{"TestSeed", "TestAddons", "TestMaintenance", "TestUnlisted"}
	if !slices.Equal(got, want) {
		t.Errorf("start order %v, want %v", got, want)
	}
}
