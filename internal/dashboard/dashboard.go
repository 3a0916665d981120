// Package dashboard is Lotse's web dashboard: a page (embedded, plain
// JavaScript, nothing fetched from elsewhere) and a proxy to the
// management API that forwards the signed-in user's bearer token and no
// credentials of its own. Every action the page offers is an ordinary
// request of the management API as that user, so RBAC and admission apply
// exactly as they do to the CLI.
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

//go:embed static
var static embed.FS

// APIPrefix is where the page reaches the management API.
const APIPrefix = "/k8s"

// Handler serves the page and the proxy. api is the management API: only
// its address and the CA that signs it are used, never its credentials.
func Handler(api *rest.Config) (http.Handler, error) {
	target, err := url.Parse(api.Host)
	if err != nil || target.Host == "" {
		return nil, fmt.Errorf("dashboard: management API address %q: %v", api.Host, err)
	}
	if target.Scheme == "" {
		target.Scheme = "https"
	}
	anonymous := rest.AnonymousClientConfig(api)
	transport, err := rest.TransportFor(anonymous)
	if err != nil {
		return nil, fmt.Errorf("dashboard: transport to the management API: %w", err)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.URL.Path = strings.TrimPrefix(r.In.URL.Path, APIPrefix)
			r.Out.URL.RawPath = ""
			r.Out.Host = target.Host
			// The proxy drops hop-by-hop headers, and a client can name
			// Authorization one (Connection: Authorization); the token
			// checked is the token sent.
			r.Out.Header.Set("Authorization", r.In.Header.Get("Authorization"))
			// Only the user's token goes through: no cookies, and no
			// header that would ask the API to take someone else's name.
			r.Out.Header.Del("Cookie")
			for name := range r.Out.Header {
				lower := strings.ToLower(name)
				if strings.HasPrefix(lower, "impersonate-") || strings.HasPrefix(lower, "x-remote-") {
					r.Out.Header.Del(name)
				}
			}
		},
		Transport: transport,
		// Watches stream: pass every event on at once.
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			writeStatus(w, http.StatusBadGateway, "ServiceUnavailable", "the management API cannot be reached: "+err.Error())
		},
	}
	files, err := fs.Sub(static, "static")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(APIPrefix+"/", requireToken(proxy))
	mux.Handle("/", http.FileServerFS(files))
	return securityHeaders(mux), nil
}

// requireToken refuses, before anything reaches the management API, a
// request that carries no bearer token: the dashboard acts for signed-in
// users only.
func requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		token, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || strings.TrimSpace(token) == "" {
			writeStatus(w, http.StatusUnauthorized, "Unauthorized", "sign in with a management-API token first")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// loopbackHostOnly refuses requests whose Host is not this loopback
// server's: a page of another site whose name was made to resolve to
// 127.0.0.1 (DNS rebinding) cannot use the dashboard.
func loopbackHostOnly(addr string, next http.Handler) http.Handler {
	_, port, _ := net.SplitHostPort(addr)
	allowed := map[string]bool{addr: true, "localhost:" + port: true, "127.0.0.1:" + port: true, "[::1]:" + port: true}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allowed[r.Host] {
			writeStatus(w, http.StatusMisdirectedRequest, "BadRequest", "this dashboard answers to "+addr+" only")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// writeStatus answers as the Kubernetes API would: a Status object, which
// the page shows like any API error.
func writeStatus(w http.ResponseWriter, code int, reason, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": message,
	})
}

// Options of a dashboard server.
type Options struct {
	// Addr is host:port to listen on (port 0 picks one).
	Addr string
	// CertFile and KeyFile serve HTTPS; without them only a loopback
	// address is allowed (tokens must not cross a network in the clear).
	CertFile, KeyFile string
}

// Server is a running dashboard.
type Server struct {
	URL    string
	server *http.Server
	done   chan struct{}
	err    error
}

// Start listens and serves until Stop.
func Start(api *rest.Config, opts Options) (*Server, error) {
	handler, err := Handler(api)
	if err != nil {
		return nil, err
	}
	tlsOn := opts.CertFile != "" || opts.KeyFile != ""
	if tlsOn && (opts.CertFile == "" || opts.KeyFile == "") {
		return nil, errors.New("dashboard: give both a certificate and its key, or neither")
	}
	host, _, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("dashboard address %q: want host:port, e.g. 127.0.0.1:8080", opts.Addr)
	}
	if ip := net.ParseIP(host); !tlsOn && (ip == nil || !ip.IsLoopback()) && host != "localhost" {
		return nil, fmt.Errorf("dashboard address %s is not a loopback address: serving it needs TLS (a certificate and key), or tokens would cross the network in the clear", opts.Addr)
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	scheme := "http"
	if tlsOn {
		scheme = "https"
	}
	if !tlsOn {
		handler = loopbackHostOnly(ln.Addr().String(), handler)
	}
	s := &Server{
		URL:    scheme + "://" + ln.Addr().String(),
		server: &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second},
		done:   make(chan struct{}),
	}
	go func() {
		var err error
		if tlsOn {
			err = s.server.ServeTLS(ln, opts.CertFile, opts.KeyFile)
		} else {
			err = s.server.Serve(ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
		close(s.done)
	}()
	return s, nil
}

// Stop ends the server; open watches are cut.
func (s *Server) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.server.Shutdown(ctx); err != nil {
		_ = s.server.Close()
	}
	<-s.done
	return s.err
}

// Done is closed when the server ends; Err then says why (nil: stopped).
func (s *Server) Done() <-chan struct{} { return s.done }

// Err is why the server ended, once Done is closed.
func (s *Server) Err() error {
	<-s.done
	return s.err
}
