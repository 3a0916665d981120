package e2e

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestAPIProbe: the probe that says "no request failed" in the HA tests
// counts a read as failed exactly when a client-go client would have seen
// it fail (or a client that retries once after a timeout or another error).
func TestAPIProbe(t *testing.T) {
	tests := []struct {
		name       string
		answer     func(n int64, w http.ResponseWriter) // n counts requests from 1
		wantFailed bool
	}{
		{"answers", func(n int64, w http.ResponseWriter) {}, false},
		{"Retry-After while shutting down, then answers", func(n int64, w http.ResponseWriter) {
			if n%5 < 3 {
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusTooManyRequests)
			}
		}, false},
		{"connections dropped, then answered", func(n int64, w http.ResponseWriter) {
			if n%11 != 0 { // the 11th try: client-go's 10th retry
				dropConnection(w)
			}
		}, false},
		{"connections dropped past client-go's retries", func(n int64, w http.ResponseWriter) {
			if n%12 != 0 { // the 12th try: one more than client-go makes
				dropConnection(w)
			}
		}, true},
		{"connections dropped for good", func(n int64, w http.ResponseWriter) { dropConnection(w) }, true},
		{"Retry-After that is not a number is not waited for", func(n int64, w http.ResponseWriter) {
			if n%3 != 0 {
				w.Header().Set("Retry-After", "soon")
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		}, true},
		{"one error without Retry-After is retried", func(n int64, w http.ResponseWriter) {
			if n%2 == 1 {
				w.WriteHeader(http.StatusInternalServerError)
			}
		}, false},
		{"two errors without Retry-After fail", func(n int64, w http.ResponseWriter) { w.WriteHeader(http.StatusInternalServerError) }, true},
		{"one timeout is retried", func(n int64, w http.ResponseWriter) {
			if n%2 == 1 {
				time.Sleep(time.Second)
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var n atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/api/v1/namespaces/default" {
					t.Errorf("probe asked for %s", r.URL.Path)
				}
				tt.answer(n.Add(1), w)
			}))
			defer srv.Close()
			httpc := &http.Client{Timeout: 500 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
			p := startAPIProbeWaiting(t, httpc, srv.URL, time.Millisecond)
			time.Sleep(2 * time.Second)
			p.stopping.Store(true)
			p.done.Wait()
			if failed := p.failed.Load() > 0; failed != tt.wantFailed {
				t.Errorf("failed reads: %d (ok %d, retried %d, %s), want failures: %t", p.failed.Load(), p.ok.Load(), p.retried.Load(), strings.Join(p.failures, "; "), tt.wantFailed)
			}
			if !tt.wantFailed && p.ok.Load() < 2 {
				t.Errorf("only %d reads answered", p.ok.Load())
			}
		})
	}
}

// dropConnection closes the request's connection without an answer: the
// client sees EOF, as from a server killed mid-request.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		conn.Close()
	}
}
