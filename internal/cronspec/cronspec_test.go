package cronspec

import (
	"strings"
	"testing"
	"time"
)

func TestParseAndLocation(t *testing.T) {
	at := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		expr, zone string
		wantNext   time.Time
		wantErr    string
	}{
		{"30 * * * *", "", at.Add(30 * time.Minute), ""},
		{"0 20 * * *", "Europe/Zurich", at.Add(time.Hour), ""},
		{"0 25 * * *", "", time.Time{}, `f.schedule: "0 25 * * *" is not a cron schedule`},
		{"0 1 * * *", "Mars/Olympus", time.Time{}, `f.location: "Mars/Olympus" is not a time zone name`},
	} {
		loc, err := Location("f.location", tt.zone)
		var next time.Time
		if err == nil {
			var s interface{ Next(time.Time) time.Time }
			if s, err = Parse("f.schedule", tt.expr, "0 */6 * * *"); err == nil {
				next = s.Next(at.In(loc))
			}
		}
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s in %q: error %v, want %q", tt.expr, tt.zone, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !next.Equal(tt.wantNext) {
			t.Errorf("%s in %q: next %v, %v; want %v", tt.expr, tt.zone, next, err, tt.wantNext)
		}
	}
}
