package hibernation

import (
	"strings"
	"testing"
	"time"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

func TestParseErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name string
		in   lotsev1.HibernationSchedule
		want string
	}{
		{"bad start", lotsev1.HibernationSchedule{Start: "0 25 * * *"}, "spec.hibernation.schedules[0].start"},
		{"bad end", lotsev1.HibernationSchedule{Start: "0 20 * * *", End: "x y z * *"}, "spec.hibernation.schedules[0].end"},
		{"bad zone", lotsev1.HibernationSchedule{Start: "0 20 * * *", Location: "Mars/Olympus"}, "spec.hibernation.schedules[0].location"},
		{"neither", lotsev1.HibernationSchedule{Location: "UTC"}, "set start, end or both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]lotsev1.HibernationSchedule{tt.in})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to name %q", err, tt.want)
			}
		})
	}
}

func TestDue(t *testing.T) {
	zurich, err := time.LoadLocation("Europe/Zurich")
	if err != nil {
		t.Skip("no time zone database")
	}
	nights := []lotsev1.HibernationSchedule{{Start: "0 20 * * 1-5", End: "0 7 * * 1-5", Location: "Europe/Zurich"}}
	// Monday 2026-11-30.
	at := func(day, hour, minute int) time.Time { return time.Date(2026, 11, day, hour, minute, 0, 0, zurich) }
	tests := []struct {
		name       string
		schedules  []lotsev1.HibernationSchedule
		since, now time.Time
		hibernate  bool
		set        bool
	}{
		{"before the start", nights, at(30, 19, 0), at(30, 19, 59), false, false},
		{"the start passed", nights, at(30, 19, 59), at(30, 20, 0), true, true},
		{"the night, nothing due", nights, at(30, 21, 0), at(30, 23, 0), false, false},
		{"the end passed", nights, at(30, 23, 0), at(30+1, 7, 1), false, true},
		{"lotse was down over start and end: the end is latest", nights, at(30, 19, 0), at(30+1, 8, 0), false, true},
		{"weekend: Saturday has no start", nights, at(28, 19, 0), at(28, 21, 0), false, false},
		{"start and end the same minute: awake",
			[]lotsev1.HibernationSchedule{{Start: "30 12 * * *"}, {End: "30 12 * * *"}}, at(30, 13, 0), at(30, 14, 0), false, true}, // UTC 12:00 to 13:00
		{"UTC by default", []lotsev1.HibernationSchedule{{Start: "0 19 * * *"}}, at(30, 19, 30), at(30, 20, 30), true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse(tt.schedules)
			if err != nil {
				t.Fatal(err)
			}
			hibernate, set := Due(s, tt.since, tt.now)
			if hibernate != tt.hibernate || set != tt.set {
				t.Errorf("Due = (%t, %t), want (%t, %t)", hibernate, set, tt.hibernate, tt.set)
			}
		})
	}
}

func TestNext(t *testing.T) {
	s, err := Parse([]lotsev1.HibernationSchedule{{Start: "0 20 * * *", End: "0 7 * * *"}, {Start: "0 12 * * *"}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	start, end := Next(s, now)
	if want := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC); !start.Equal(want) {
		t.Errorf("next start %s, want %s", start, want)
	}
	if want := time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC); !end.Equal(want) {
		t.Errorf("next end %s, want %s", end, want)
	}
}
