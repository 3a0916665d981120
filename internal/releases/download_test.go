package releases

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// A download server on loopback standing in for a provider's mirror.
func mirror(t *testing.T, tamper string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := "binary " + r.URL.Path
		if tamper != "" && strings.HasSuffix(r.URL.Path, "/"+tamper) {
			body += " (tampered)"
		}
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestDownloadSourceVerifiesDigests(t *testing.T) {
	rel := Release{Version: "1.36.3", Etcd: "3.6.16", Digests: map[string]string{}}
	for _, c := range Components {
		rel.Digests[c] = digest([]byte("binary /k8s/1.36.3/" + c))
	}
	etcdDigests := map[string]string{}
	for _, c := range EtcdComponents {
		etcdDigests["3.6.16/"+c] = digest([]byte("binary /etcd/3.6.16/" + c))
	}
	cases := []struct {
		name    string
		tamper  string
		digests map[string]string
		wantErr string
	}{
		{name: "all digests match"},
		{name: "tampered binary", tamper: "kubelet", wantErr: "does not match"},
		{name: "missing digest", digests: map[string]string{}, wantErr: "refusing to download an unverified binary"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := mirror(t, tc.tamper)
			r := rel
			if tc.digests != nil {
				r.Digests = tc.digests
			}
			store := &Store{Dir: t.TempDir(), Source: withFakeCloudController{&DownloadSource{
				KubernetesURL: srv.URL + "/k8s/{version}/{component}",
				EtcdURL:       srv.URL + "/etcd/{version}/{component}",
				EtcdDigests:   etcdDigests,
			}}}
			bins, err := store.Ensure(context.Background(), r, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if store.Installed(r) {
					t.Error("a failed download left the release marked installed")
				}
				leftovers, _ := filepath.Glob(filepath.Join(store.KubernetesBinDir(r.Version), "*.download"))
				if len(leftovers) > 0 {
					t.Errorf("partial downloads left: %v", leftovers)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(bins.Path("kube-apiserver"))
			if err != nil || string(data) != "binary /k8s/1.36.3/kube-apiserver" {
				t.Errorf("kube-apiserver = %q, %v", data, err)
			}
			if fi, err := os.Stat(bins.Path("etcd")); err != nil || fi.Mode().Perm()&0o100 == 0 {
				t.Errorf("etcd not executable: %v %v", fi, err)
			}
		})
	}
}

// withFakeCloudController gives a Source a fake build of Lotse's cloud
// controller manager, which no download offers (the store would build it
// from the module proxy).
type withFakeCloudController struct{ Source }

func (withFakeCloudController) EnsureCloudController(_ context.Context, r Release, binDir string, _ io.Writer) error {
	return (&recordingSource{}).EnsureCloudController(context.Background(), r, binDir, io.Discard)
}
