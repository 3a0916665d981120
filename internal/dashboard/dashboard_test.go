package dashboard

import (
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
)

// fakeAPI records what reaches it in place of the management API.
type fakeAPI struct {
	server *httptest.Server
	last   *http.Request
}

func newFakeAPI(t *testing.T) *fakeAPI {
	f := &fakeAPI{}
	f.server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.last = r.Clone(r.Context())
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"kind":"APIVersions"}`)
	}))
	t.Cleanup(f.server.Close)
	return f
}

func (f *fakeAPI) config() *rest.Config {
	pemCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.server.Certificate().Raw})
	// Credentials in the kubeconfig must never be used by the proxy.
	return &rest.Config{Host: f.server.URL, BearerToken: "the-admins-token",
		TLSClientConfig: rest.TLSClientConfig{CAData: pemCert}}
}

func TestProxy(t *testing.T) {
	api := newFakeAPI(t)
	h, err := Handler(api.config())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		headers   map[string]string
		wantCode  int
		wantToken string // what reaches the API; "" = nothing reaches it
	}{
		{"no token", nil, http.StatusUnauthorized, ""},
		{"not a bearer token", map[string]string{"Authorization": "Basic YTpi"}, http.StatusUnauthorized, ""},
		{"empty bearer token", map[string]string{"Authorization": "Bearer  "}, http.StatusUnauthorized, ""},
		{"the user's token", map[string]string{"Authorization": "Bearer users-token"}, http.StatusOK, "Bearer users-token"},
		{"a token named hop-by-hop still goes through", map[string]string{"Authorization": "Bearer users-token", "Connection": "Authorization"}, http.StatusOK, "Bearer users-token"},
		{"impersonation and cookies dropped", map[string]string{
			"Authorization": "Bearer users-token", "Impersonate-User": "admin", "Impersonate-Group": "system:masters",
			"X-Remote-User": "admin", "Cookie": "session=1",
		}, http.StatusOK, "Bearer users-token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api.last = nil
			req := httptest.NewRequest(http.MethodGet, APIPrefix+"/api/v1/namespaces", nil)
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.wantCode {
				t.Fatalf("HTTP %d, want %d: %s", rec.Code, tc.wantCode, rec.Body)
			}
			if tc.wantToken == "" {
				if api.last != nil {
					t.Fatalf("a request without a token reached the API")
				}
				if !strings.Contains(rec.Body.String(), "sign in") {
					t.Fatalf("the refusal does not say to sign in: %s", rec.Body)
				}
				return
			}
			if api.last == nil {
				t.Fatal("nothing reached the API")
			}
			if got := api.last.Header.Get("Authorization"); got != tc.wantToken {
				t.Fatalf("Authorization %q reached the API, want %q", got, tc.wantToken)
			}
			if api.last.URL.Path != "/api/v1/namespaces" {
				t.Fatalf("path %q reached the API", api.last.URL.Path)
			}
			for name := range api.last.Header {
				l := strings.ToLower(name)
				if strings.HasPrefix(l, "impersonate-") || strings.HasPrefix(l, "x-remote-") || l == "cookie" {
					t.Fatalf("header %s reached the API", name)
				}
			}
		})
	}
}

func TestPageAndHeaders(t *testing.T) {
	h, err := Handler(newFakeAPI(t).config())
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/", "/app.js", "/style.css"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: HTTP %d", path, rec.Code)
		}
		if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Fatalf("%s: Content-Security-Policy %q", path, csp)
		}
	}
}

func TestStartRefusesPlainHTTPBeyondLoopback(t *testing.T) {
	cfg := newFakeAPI(t).config()
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{Addr: "0.0.0.0:0"}, "needs TLS"},
		{Options{Addr: "example:80"}, "needs TLS"},
		{Options{Addr: "127.0.0.1:0", CertFile: "c.pem"}, "both a certificate and its key"},
		{Options{Addr: "8080"}, "want host:port"},
	} {
		if _, err := Start(cfg, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Start(%+v): %v, want an error saying %q", tc.opts, err, tc.want)
		}
	}
	s, err := Start(cfg, Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(s.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d from the dashboard's own address", resp.StatusCode)
	}
	// A name rebound to 127.0.0.1 is not this dashboard's.
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/", nil)
	req.Host = "attacker.example:80"
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("a foreign Host: HTTP %d", resp.StatusCode)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
}
