// Package hibernation decides when a cluster's hibernation schedules
// put it to sleep and wake it, as Gardener's hibernation schedules do:
// each start time sets spec.hibernation.enabled to true, each end time to
// false. Between those times the flag is the user's: waking a scheduled
// sleeper by hand lasts until the next start.
package hibernation

import (
	"fmt"
	"time"

	"github.com/robfig/cron/v3"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/cronspec"
)

// Schedule is one parsed start/end pair.
type Schedule struct {
	start, end cron.Schedule // nil when not given
	loc        *time.Location
}

// Parse checks the schedules; an error names the field and what is wrong.
func Parse(specs []lotsev1.HibernationSchedule) ([]Schedule, error) {
	var out []Schedule
	for i, s := range specs {
		field := fmt.Sprintf("spec.hibernation.schedules[%d]", i)
		loc, err := cronspec.Location(field+".location", s.Location)
		if err != nil {
			return nil, err
		}
		sch := Schedule{loc: loc}
		for _, t := range []struct {
			name string
			expr string
			dst  *cron.Schedule
		}{{"start", s.Start, &sch.start}, {"end", s.End, &sch.end}} {
			if t.expr == "" {
				continue
			}
			parsed, err := cronspec.Parse(field+"."+t.name, t.expr, "0 20 * * 1-5")
			if err != nil {
				return nil, err
			}
			*t.dst = parsed
		}
		if sch.start == nil && sch.end == nil {
			return nil, fmt.Errorf("%s: set start, end or both", field)
		}
		out = append(out, sch)
	}
	return out, nil
}

// Due says what the schedules ask for in (since, now]: hibernate (true),
// wake (false), or nothing (set false). When several times fall in the
// interval, the latest wins; a start and an end at the same minute wake.
func Due(schedules []Schedule, since, now time.Time) (hibernate bool, set bool) {
	var latest time.Time
	for _, s := range schedules {
		for _, t := range []struct {
			sched     cron.Schedule
			hibernate bool
		}{{s.start, true}, {s.end, false}} {
			if t.sched == nil {
				continue
			}
			at := lastBetween(t.sched, since.In(s.loc), now.In(s.loc))
			if at.IsZero() {
				continue
			}
			if !set || at.After(latest) || (at.Equal(latest) && !t.hibernate) {
				latest, hibernate, set = at, t.hibernate, true
			}
		}
	}
	return hibernate, set
}

// lastBetween is the last time of sched in (since, now], or zero.
func lastBetween(sched cron.Schedule, since, now time.Time) time.Time {
	var last time.Time
	for t := sched.Next(since); !t.After(now); t = sched.Next(t) {
		last = t
	}
	return last
}

// Next returns the schedules' next start and next end after now (zero
// when there is none).
func Next(schedules []Schedule, now time.Time) (start, end time.Time) {
	for _, s := range schedules {
		if s.start != nil {
			if t := s.start.Next(now.In(s.loc)); start.IsZero() || t.Before(start) {
				start = t
			}
		}
		if s.end != nil {
			if t := s.end.Next(now.In(s.loc)); end.IsZero() || t.Before(end) {
				end = t
			}
		}
	}
	return start, end
}
