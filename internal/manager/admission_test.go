package manager

import (
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/utils/ptr"
)

// The configuration points the API server at the webhook by URL, or, for
// managers in a cluster, through their Service, path per webhook.
func TestWebhookClientConfig(t *testing.T) {
	svc := &admissionregistrationv1.ServiceReference{Namespace: "lotse-system", Name: "lotse-webhook", Port: ptr.To[int32](443)}
	for _, tc := range []struct {
		name   string
		server admissionServer
	}{
		{"by URL", admissionServer{url: "https://127.0.0.1:9443", caBundle: []byte("ca")}},
		{"through a Service", admissionServer{service: svc, caBundle: []byte("ca")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.server.configuration()
			if len(cfg.Webhooks) != 2 {
				t.Fatalf("%d webhooks, want 2", len(cfg.Webhooks))
			}
			for _, w := range cfg.Webhooks {
				cc := w.ClientConfig
				if string(cc.CABundle) != "ca" {
					t.Errorf("%s: CA bundle %q", w.Name, cc.CABundle)
				}
				switch {
				case tc.server.service == nil && (cc.Service != nil || cc.URL == nil || *cc.URL == tc.server.url):
					t.Errorf("%s: client config %+v, want a URL below %s", w.Name, cc, tc.server.url)
				case tc.server.service != nil && (cc.URL != nil || cc.Service == nil || cc.Service.Name != svc.Name || cc.Service.Path == nil || *cc.Service.Port != 443):
					t.Errorf("%s: client config %+v, want Service %s/%s with a path", w.Name, cc, svc.Namespace, svc.Name)
				}
			}
			// Each webhook its own path, and the shared reference untouched.
			if tc.server.service != nil {
				if *cfg.Webhooks[0].ClientConfig.Service.Path == *cfg.Webhooks[1].ClientConfig.Service.Path || svc.Path != nil {
					t.Error("the webhooks share a path, or the Service reference was changed")
				}
			}
		})
	}
}
