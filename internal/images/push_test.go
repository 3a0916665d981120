package images

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// testRegistry is go-containerregistry's registry (the protocol a real one
// speaks, blobs in memory) on a loopback port. It counts the requests that
// send data, and with a user set it asks for basic authentication.
type testRegistry struct {
	*httptest.Server
	user, password string

	mu     sync.Mutex
	writes int
}

func startRegistry(t *testing.T, user, password string) *testRegistry {
	r := &testRegistry{user: user, password: password}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.user != "" {
			u, p, ok := req.BasicAuth()
			if !ok || u != r.user || p != r.password {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
		}
		if req.Method == http.MethodPut || req.Method == http.MethodPost || req.Method == http.MethodPatch {
			r.mu.Lock()
			r.writes++
			r.mu.Unlock()
		}
		inner.ServeHTTP(w, req)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *testRegistry) host() string { return strings.TrimPrefix(r.URL, "http://") }

func (r *testRegistry) writeCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writes
}

func dockerConfig(t *testing.T, host, user, password string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	if err := os.WriteFile(p, []byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// An image pushed is in the registry under its tag, pulled by the digest
// Push returns, with the image ID the build recorded; pushing it again
// sends nothing.
func TestPush(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b := &Builder{CacheDir: t.TempDir()}
	img := FromBinary("echo", "v1", echoBinary(t), nil)
	tar, stamp := ensure(t, b, img)
	reg := startRegistry(t, "", "")
	repo := Repository{Name: reg.host() + "/lotse", PlainHTTP: true}

	pinned, err := repo.Push(ctx, tar, img)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^` + regexp.QuoteMeta(reg.host()) + `/lotse/echo:v1-([0-9a-f]{12})@sha256:([0-9a-f]{64})$`).MatchString(pinned) {
		t.Fatalf("Push returned %q, want %s/lotse/echo:v1-ID@sha256:DIGEST", pinned, reg.host())
	}
	if id, digest, _ := strings.Cut(pinned[strings.LastIndex(pinned, ":v1-")+4:], "@sha256:"); !strings.HasPrefix(digest, id) {
		t.Errorf("the tag of %s does not name its digest", pinned)
	}
	ref, err := name.ParseReference(pinned, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("pulling %s: %v", pinned, err)
	}
	if id, _ := pulled.ConfigName(); id.String() != stamp.ImageID {
		t.Errorf("pulled image ID %s, the build recorded %s", id, stamp.ImageID)
	}
	writes := reg.writeCount()
	again, err := repo.Push(ctx, tar, img)
	if err != nil || again != pinned {
		t.Errorf("second Push = %q, %v; want %q", again, err, pinned)
	}
	if n := reg.writeCount() - writes; n != 0 {
		t.Errorf("second Push sent %d requests with data, want none", n)
	}
	if has, err := repo.Has(ctx, pinned); err != nil || !has {
		t.Errorf("Has(%s) = %t, %v", pinned, has, err)
	}
	other := pinned[:strings.LastIndex(pinned, "@")] + "@sha256:" + strings.Repeat("0", 64)
	if has, err := repo.Has(ctx, other); err != nil || has {
		t.Errorf("Has(%s) = %t, %v; want false", other, has, err)
	}

	t.Run("plain HTTP only when allowed", func(t *testing.T) {
		_, err := Repository{Name: reg.host() + "/lotse"}.Push(ctx, tar, img)
		if err == nil || !strings.Contains(err.Error(), "HTTPS only") {
			t.Errorf("Push over plain HTTP without PlainHTTP = %v, want a refusal", err)
		}
	})

	t.Run("credentials", func(t *testing.T) {
		locked := startRegistry(t, "pusher", "s3cret")
		repo := Repository{Name: locked.host() + "/lotse", PlainHTTP: true}
		if _, err := repo.Push(ctx, tar, img); err == nil {
			t.Fatal("anonymous push to a registry that wants credentials succeeded")
		}
		repo.Credentials = dockerConfig(t, "https://"+locked.host()+"/v1/", "pusher", "s3cret")
		pinned, err := repo.Push(ctx, tar, img)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(pinned, locked.host()+"/lotse/echo:v1-") {
			t.Errorf("Push returned %q", pinned)
		}
		repo.Credentials = dockerConfig(t, "other.example:5000", "pusher", "s3cret")
		if _, err := repo.Push(ctx, tar, img); err == nil || !strings.Contains(err.Error(), "no entry for "+locked.host()) {
			t.Errorf("Push with credentials for another host = %v, want an error naming %s", err, locked.host())
		}
	})
}

func TestRepositoryValidate(t *testing.T) {
	for _, tc := range []struct {
		name, want string
	}{
		{"registry.example.net:5000/lotse", ""},
		{"registry.example.net/team/lotse", ""},
		{"", "no repository"},
		{"registry.example.net", "a path under it"},
		{"registry.example.net:5000", "a path under it"},
		{"registry.example.net/lotse:v1", "no tag or digest"},
		{"registry.example.net/lotse@sha256:0123", "no tag or digest"},
		{"registry.example.net/Lotse", "repository"},
	} {
		err := Repository{Name: tc.name}.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%q) = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestParseDockerConfig(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name, file, host, user, password, err string
	}{
		{"auth", `{"auths":{"r.example:5000":{"auth":"` + b64("u:p:w") + `"}}}`, "r.example:5000", "u", "p:w", ""},
		{"url key", `{"auths":{"https://r.example/v1/":{"username":"u","password":"p"}}}`, "r.example", "u", "p", ""},
		{"not json", `auths`, "", "", "", "not a Docker config file"},
		{"no auths", `{"credsStore":"desktop"}`, "", "", "", `no "auths"`},
		{"bad base64", `{"auths":{"r":{"auth":"%%%"}}}`, "", "", "", "not base64"},
		{"no colon", `{"auths":{"r":{"auth":"` + b64("user") + `"}}}`, "", "", "", "USER:PASSWORD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseDockerConfig([]byte(tc.file))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c := got[tc.host]; c.Username != tc.user || c.Password != tc.password {
				t.Errorf("credentials for %s = %+v", tc.host, c)
			}
		})
	}
}
