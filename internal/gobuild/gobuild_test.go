package gobuild

import (
	"reflect"
	"strings"
	"testing"
)

func TestGoEnvOverridesBuildSettings(t *testing.T) {
	t.Setenv("CGO_ENABLED", "1")
	t.Setenv("GOFLAGS", "-mod=vendor")
	t.Setenv("GOTOOLCHAIN", "auto")
	t.Setenv("GOWORK", "/some/go.work")
	t.Setenv("LOTSE_TEST_KEEP", "yes")
	got := map[string][]string{}
	for _, kv := range Env() {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = append(got[k], v)
	}
	want := map[string]string{"CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "GOWORK": "off", "LOTSE_TEST_KEEP": "yes"}
	for k, v := range want {
		if !reflect.DeepEqual(got[k], []string{v}) {
			t.Errorf("%s = %v, want exactly [%s]", k, got[k], v)
		}
	}
}
