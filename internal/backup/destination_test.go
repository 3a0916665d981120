package backup

import (
	"strings"
	"testing"
)

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  Ref
		err   string
	}{
		{"20261202T101500Z", Ref{"ns", "c", "20261202T101500Z"}, ""},
		{"other/web/20261202T101500Z", Ref{"other", "web", "20261202T101500Z"}, ""},
		{"ns/../20261202T101500Z", Ref{}, `cluster ".."`},
		{"../web/20261202T101500Z", Ref{}, `namespace ".."`},
		{"ns/a/b/20261202T101500Z", Ref{}, "neither SNAPSHOT nor NAMESPACE/CLUSTER/SNAPSHOT"},
		{"/web/20261202T101500Z", Ref{}, "empty namespace or cluster"},
	} {
		got, err := ParseRef(tc.value, "ns", "c")
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseRef(%q) = %v, %v; want an error saying %q", tc.value, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseRef(%q) = %v, %v; want %v", tc.value, got, err, tc.want)
		}
	}
}
