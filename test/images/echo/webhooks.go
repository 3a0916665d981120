package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// The HTTPS side of the echo server (serve -tls-cert ... -tls-key ...): the
// webhooks and the aggregated API the end-to-end tests call through a
// cluster's API server, so that they prove the API server reaches pods.
//
//	POST /validate    admission: denies objects labelled echo-deny=true
//	POST /mutate      admission: labels objects echo-mutated=<hostname>
//	POST /convert     CRD conversion between v1 (spec.size) and v2 (spec.replicas)
//	GET  /apis[/G/V]  discovery of an aggregated API group with no resources
func webhookMux(hostname string) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /validate", admission(func(obj map[string]any) (bool, string, []map[string]any) {
		if labels(obj)["echo-deny"] == "true" {
			return false, "denied by the echo webhook on " + hostname, nil
		}
		return true, "", nil
	}))
	mux.HandleFunc("POST /mutate", admission(func(obj map[string]any) (bool, string, []map[string]any) {
		if _, ok := obj["metadata"].(map[string]any)["labels"]; !ok {
			return true, "", []map[string]any{{"op": "add", "path": "/metadata/labels", "value": map[string]string{"echo-mutated": hostname}}}
		}
		return true, "", []map[string]any{{"op": "add", "path": "/metadata/labels/echo-mutated", "value": hostname}}
	}))
	mux.HandleFunc("POST /convert", convert)
	mux.HandleFunc("GET /apis/{group}/{version}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"kind": "APIResourceList", "apiVersion": "v1",
			"groupVersion": r.PathValue("group") + "/" + r.PathValue("version"), "resources": []any{}})
	})
	mux.HandleFunc("GET /apis", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"kind": "APIGroupList", "apiVersion": "v1", "groups": []any{}})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	return mux
}

func labels(obj map[string]any) map[string]any {
	md, _ := obj["metadata"].(map[string]any)
	l, _ := md["labels"].(map[string]any)
	return l
}

// admission answers an AdmissionReview with decide's verdict and patch.
func admission(decide func(obj map[string]any) (allowed bool, msg string, patch []map[string]any)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var review struct {
			APIVersion string `json:"apiVersion"`
			Request    struct {
				UID    string         `json:"uid"`
				Object map[string]any `json:"object"`
			} `json:"request"`
		}
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		allowed, msg, patch := decide(review.Request.Object)
		resp := map[string]any{"uid": review.Request.UID, "allowed": allowed}
		if msg != "" {
			resp["status"] = map[string]any{"message": msg, "code": 403}
		}
		if patch != nil {
			data, _ := json.Marshal(patch)
			resp["patchType"] = "JSONPatch"
			resp["patch"] = base64.StdEncoding.EncodeToString(data)
		}
		writeJSON(w, map[string]any{"apiVersion": review.APIVersion, "kind": "AdmissionReview", "response": resp})
	}
}

// convert answers a ConversionReview: v1's spec.size is v2's spec.replicas.
func convert(w http.ResponseWriter, r *http.Request) {
	var review struct {
		APIVersion string `json:"apiVersion"`
		Request    struct {
			UID               string           `json:"uid"`
			DesiredAPIVersion string           `json:"desiredAPIVersion"`
			Objects           []map[string]any `json:"objects"`
		} `json:"request"`
	}
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	from, to := "replicas", "size"
	if strings.HasSuffix(review.Request.DesiredAPIVersion, "/v2") {
		from, to = "size", "replicas"
	}
	out := make([]map[string]any, 0, len(review.Request.Objects))
	for _, obj := range review.Request.Objects {
		obj["apiVersion"] = review.Request.DesiredAPIVersion
		if spec, ok := obj["spec"].(map[string]any); ok {
			if v, ok := spec[from]; ok {
				spec[to] = v
				delete(spec, from)
			}
		}
		out = append(out, obj)
	}
	writeJSON(w, map[string]any{"apiVersion": review.APIVersion, "kind": "ConversionReview", "response": map[string]any{
		"uid": review.Request.UID, "convertedObjects": out, "result": map[string]any{"status": "Success"}}})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
