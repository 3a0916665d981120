package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRegistryFlags(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "config.json")
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(good, []byte(`{"auths":{"registry.example.net:5000":{"username":"u","password":"p"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(`{"credsStore":"desktop"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name              string
		flags             registryFlags
		controlPlaneImage string
		wantErr           string
		wantRepo          bool
		wantPull          bool
	}{
		{name: "none"},
		{name: "registry", flags: registryFlags{repository: "registry.example.net:5000/lotse", plainHTTP: true, credentials: good}, wantRepo: true},
		{name: "pull credentials alone", flags: registryFlags{pullCredentials: good}, wantPull: true},
		{name: "with the control-plane image", flags: registryFlags{repository: "registry.example.net/lotse"}, controlPlaneImage: "img", wantErr: "exclude each other"},
		{name: "no path", flags: registryFlags{repository: "registry.example.net"}, wantErr: "--image-registry: repository"},
		{name: "plain HTTP alone", flags: registryFlags{plainHTTP: true}, wantErr: "need --image-registry"},
		{name: "missing credentials", flags: registryFlags{repository: "registry.example.net/lotse", credentials: filepath.Join(dir, "none.json")}, wantErr: "--image-registry-credentials: open"},
		{name: "credentials without auths", flags: registryFlags{repository: "registry.example.net/lotse", credentials: bad}, wantErr: `--image-registry-credentials: ` + bad + `: it has no "auths"`},
		{name: "credentials for another registry", flags: registryFlags{repository: "other.example.net/lotse", credentials: good}, wantErr: "--image-registry-credentials: registry credentials " + good + ": no entry for other.example.net"},
		{name: "bad pull credentials", flags: registryFlags{pullCredentials: bad}, wantErr: "--image-pull-credentials: " + bad},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo, pull, err := tc.flags.options(tc.controlPlaneImage)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (repo != nil) != tc.wantRepo || (len(pull) > 0) != tc.wantPull {
				t.Errorf("repository %+v, pull credentials %d bytes", repo, len(pull))
			}
		})
	}
}
