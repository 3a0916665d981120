package maintenance

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name, begin, end string
		want             Window
		wantErr          string
	}{
		{"an hour in UTC+1", "220000+0100", "230000+0100", Window{21 * time.Hour, 22 * time.Hour}, ""},
		{"negative offset", "013000-0500", "023000-0500", Window{6*time.Hour + 30*time.Minute, 7*time.Hour + 30*time.Minute}, ""},
		{"crossing midnight", "230000+0000", "010000+0000", Window{23 * time.Hour, time.Hour}, ""},
		{"end before begin", "100000+0000", "090000+0000", Window{}, "lasts 23h0m0s; a window lasts 30 minutes to 6 hours"},
		{"too short", "100000+0000", "101000+0000", Window{}, "lasts 10m0s"},
		{"malformed offset", "100000+1", "110000+0000", Window{}, "begin: \"100000+1\" is not a time of day"},
		{"hour 24", "240000+0000", "010000+0000", Window{}, "begin:"},
		{"malformed end", "100000+0000", "11:00", Window{}, "end: \"11:00\" is not a time of day"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := Parse(tt.begin, tt.end)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse = %v, %v; want an error containing %q", w, err, tt.wantErr)
				}
				return
			}
			if err != nil || w != tt.want {
				t.Fatalf("Parse = %+v, %v; want %+v", w, err, tt.want)
			}
		})
	}
}

func TestNextAndContains(t *testing.T) {
	at := func(s string) time.Time { v, _ := time.Parse(time.RFC3339, s); return v }
	overnight := Window{23 * time.Hour, time.Hour}
	evening := Window{21 * time.Hour, 22 * time.Hour}
	tests := []struct {
		name       string
		w          Window
		now        time.Time
		begin, end string
		inside     bool
	}{
		{"before today's window", evening, at("2026-12-01T10:00:00Z"), "2026-12-01T21:00:00Z", "2026-12-01T22:00:00Z", false},
		{"inside", evening, at("2026-12-01T21:30:00Z"), "2026-12-01T21:00:00Z", "2026-12-01T22:00:00Z", true},
		{"at the begin", evening, at("2026-12-01T21:00:00Z"), "2026-12-01T21:00:00Z", "2026-12-01T22:00:00Z", true},
		{"at the end: over", evening, at("2026-12-01T22:00:00Z"), "2026-12-02T21:00:00Z", "2026-12-02T22:00:00Z", false},
		{"after midnight in an overnight window", overnight, at("2026-12-02T00:30:00Z"), "2026-12-01T23:00:00Z", "2026-12-02T01:00:00Z", true},
		{"before an overnight window", overnight, at("2026-12-01T12:00:00Z"), "2026-12-01T23:00:00Z", "2026-12-02T01:00:00Z", false},
		{"other time zone", evening, at("2026-12-01T22:30:00+01:00"), "2026-12-01T21:00:00Z", "2026-12-01T22:00:00Z", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, e := tt.w.Next(tt.now)
			if b.Format(time.RFC3339) != tt.begin || e.Format(time.RFC3339) != tt.end {
				t.Errorf("Next = %s .. %s, want %s .. %s", b.Format(time.RFC3339), e.Format(time.RFC3339), tt.begin, tt.end)
			}
			if got := tt.w.Contains(tt.now); got != tt.inside {
				t.Errorf("Contains = %v, want %v", got, tt.inside)
			}
		})
	}
}

func TestDefault(t *testing.T) {
	b1, e1 := Default("3f2c1a7e-uid")
	b2, e2 := Default("3f2c1a7e-uid")
	if b1 != b2 || e1 != e2 {
		t.Errorf("Default is not stable: %s-%s, %s-%s", b1, e1, b2, e2)
	}
	w, err := Parse(b1, e1)
	if err != nil {
		t.Fatalf("Default window %s-%s does not parse: %v", b1, e1, err)
	}
	if w.Length() != time.Hour {
		t.Errorf("Default window lasts %s, want 1h", w.Length())
	}
	hours := map[string]bool{}
	for i := range 200 {
		b, _ := Default(strings.Repeat("x", i))
		hours[b] = true
	}
	if len(hours) < 12 {
		t.Errorf("Default picks only %d different hours for 200 clusters", len(hours))
	}
}
