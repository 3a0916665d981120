// Package maintenance is the arithmetic of maintenance windows (daily
// windows written HHMMSS+ZZZZ, as Gardener writes them) and of what a
// cluster's maintenance would do.
package maintenance

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// Window is a daily time window.
type Window struct {
	// Begin and End are offsets from midnight UTC; End may be smaller
	// than Begin (the window crosses midnight UTC).
	Begin, End time.Duration
}

var clockRe = regexp.MustCompile(`^([01][0-9]|2[0-3])([0-5][0-9])([0-5][0-9])([+-])([01][0-9]|1[0-4])([0-5][0-9])$`)

// parseClock turns "220000+0100" into its offset from midnight UTC.
func parseClock(s string) (time.Duration, error) {
	m := clockRe.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a time of day with its UTC offset; write it HHMMSS+ZZZZ, like 220000+0100", s)
	}
	n := func(i int) time.Duration { v, _ := strconv.Atoi(m[i]); return time.Duration(v) }
	local := n(1)*time.Hour + n(2)*time.Minute + n(3)*time.Second
	offset := n(5)*time.Hour + n(6)*time.Minute
	if m[4] == "-" {
		offset = -offset
	}
	return mod24(local - offset), nil
}

func mod24(d time.Duration) time.Duration {
	d %= 24 * time.Hour
	if d < 0 {
		d += 24 * time.Hour
	}
	return d
}

// Limits of a window's length (the CRD checks them too).
const (
	MinLength = 30 * time.Minute
	MaxLength = 6 * time.Hour
)

// Parse reads a window from begin and end ("220000+0100").
func Parse(begin, end string) (Window, error) {
	b, err := parseClock(begin)
	if err != nil {
		return Window{}, fmt.Errorf("begin: %w", err)
	}
	e, err := parseClock(end)
	if err != nil {
		return Window{}, fmt.Errorf("end: %w", err)
	}
	w := Window{Begin: b, End: e}
	if l := w.Length(); l < MinLength || l > MaxLength {
		return Window{}, fmt.Errorf("from %s to %s lasts %s; a window lasts 30 minutes to 6 hours", begin, end, l)
	}
	return w, nil
}

// Length is how long the window lasts.
func (w Window) Length() time.Duration { return mod24(w.End - w.Begin) }

// Next returns the window that contains now, or else the next one to
// begin.
func (w Window) Next(now time.Time) (begin, end time.Time) {
	now = now.UTC()
	midnight := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	// The window that began yesterday may still be open (it crosses
	// midnight); otherwise today's or tomorrow's.
	for _, day := range []int{-1, 0, 1} {
		b := midnight.AddDate(0, 0, day).Add(w.Begin)
		e := b.Add(w.Length())
		if now.Before(e) {
			return b, e
		}
	}
	b := midnight.AddDate(0, 0, 2).Add(w.Begin)
	return b, b.Add(w.Length())
}

// Contains reports whether now is inside the window.
func (w Window) Contains(now time.Time) bool {
	b, _ := w.Next(now)
	return !now.Before(b)
}

// Default is the window of a cluster that names none: one hour, starting
// on an hour picked from the cluster's UID, so that clusters spread over
// the day and the pick survives restarts of Lotse.
func Default(uid string) (begin, end string) {
	sum := sha256.Sum256([]byte(uid))
	hour := int(binary.BigEndian.Uint32(sum[:4]) % 24)
	return fmt.Sprintf("%02d0000+0000", hour), fmt.Sprintf("%02d0000+0000", (hour+1)%24)
}
