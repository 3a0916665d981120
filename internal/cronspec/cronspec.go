// Package cronspec reads the schedules users write in specs: five-field
// cron expressions (minute hour day-of-month month day-of-week) in an IANA
// time zone, with errors that name the field and show the form.
package cronspec

import (
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
)

var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// Parse reads expr; example shows the form in the error for field.
func Parse(field, expr, example string) (cron.Schedule, error) {
	s, err := parser.Parse(expr)
	if err != nil {
		return nil, fmt.Errorf("%s: %q is not a cron schedule (minute hour day-of-month month day-of-week, e.g. %q): %v", field, expr, example, err)
	}
	return s, nil
}

// Location reads an IANA time zone name; "" is UTC.
func Location(field, name string) (*time.Location, error) {
	if name == "" {
		return time.UTC, nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %q is not a time zone name (use an IANA name such as Europe/Zurich): %v", field, name, err)
	}
	return loc, nil
}
