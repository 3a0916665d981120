package hibernation

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Responders answer on the API endpoints of hibernated clusters: with the
// cluster's own serving certificate (clients verify it as usual) and a
// Kubernetes Status 503 that says the cluster sleeps and how to wake it,
// so that kubectl fails at once with that message instead of timing out
// on a closed port.
type Responders struct {
	mu      sync.Mutex
	serving map[string]*responder
}

type responder struct {
	addr    string
	message string
	server  *http.Server
}

// Serve answers on addr for the cluster key until Stop; a call with the
// same address and message is a no-op.
func (r *Responders) Serve(key, addr, certFile, keyFile, message string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur, ok := r.serving[key]; ok {
		if cur.addr == addr && cur.message == message {
			return nil
		}
		_ = cur.server.Close()
		delete(r.serving, key)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure,
		Message:  message,
		Reason:   metav1.StatusReasonServiceUnavailable,
		Code:     http.StatusServiceUnavailable,
	})
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write(body)
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = ln.Close()
		}
	}()
	if r.serving == nil {
		r.serving = map[string]*responder{}
	}
	r.serving[key] = &responder{addr: addr, message: message, server: srv}
	return nil
}

// Stop closes the cluster's responder (and frees its port) if it has one.
func (r *Responders) Stop(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur, ok := r.serving[key]; ok {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = cur.server.Shutdown(ctx)
		_ = cur.server.Close()
		delete(r.serving, key)
	}
}
