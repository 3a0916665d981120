// Package override changes a member's copy of a fleet resource as the
// fleet's OverridePolicies say: images (registry, repository, tag),
// commands, args, labels, annotations, then JSON patches, in that order.
// It is pure: the engine passes the copy and the overriders that target
// the member.
package override

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	policyv1 "github.com/lotse/lotse/api/policy/v1alpha1"
)

// Apply changes obj by each set of overriders in turn.
func Apply(obj *unstructured.Unstructured, sets []policyv1.Overriders) error {
	for _, o := range sets {
		for _, io := range o.ImageOverrider {
			if err := applyImage(obj, io); err != nil {
				return err
			}
		}
		for _, co := range o.CommandOverrider {
			if err := applyCommandArgs(obj, co, "command"); err != nil {
				return err
			}
		}
		for _, ao := range o.ArgsOverrider {
			if err := applyCommandArgs(obj, ao, "args"); err != nil {
				return err
			}
		}
		for _, lo := range o.LabelsOverrider {
			obj.SetLabels(applyMap(obj.GetLabels(), lo))
		}
		for _, ao := range o.AnnotationsOverrider {
			obj.SetAnnotations(applyMap(obj.GetAnnotations(), ao))
		}
		if len(o.Plaintext) > 0 {
			if err := applyPlaintext(obj, o.Plaintext); err != nil {
				return err
			}
		}
	}
	return nil
}

// podSpecPath is where a kind keeps its pod spec.
func podSpecPath(obj *unstructured.Unstructured) []string {
	switch obj.GetKind() {
	case "Pod":
		return []string{"spec"}
	case "CronJob":
		return []string{"spec", "jobTemplate", "spec", "template", "spec"}
	default:
		return []string{"spec", "template", "spec"}
	}
}

func applyImage(obj *unstructured.Unstructured, o policyv1.ImageOverrider) error {
	if o.Predicate != nil {
		parent, last, err := walk(obj.Object, pointer(o.Predicate.Path))
		if err != nil {
			return fmt.Errorf("imageOverrider: path %s does not exist in %s %s", o.Predicate.Path, obj.GetKind(), obj.GetName())
		}
		image, ok := parent[last].(string)
		if !ok {
			return fmt.Errorf("imageOverrider: %s in %s %s is not an image", o.Predicate.Path, obj.GetKind(), obj.GetName())
		}
		parent[last] = changeImage(image, o)
		return nil
	}
	spec := podSpecPath(obj)
	for _, list := range []string{"initContainers", "containers"} {
		containers, found, err := unstructured.NestedSlice(obj.Object, append(slices.Clone(spec), list)...)
		if err != nil || !found {
			continue
		}
		for _, c := range containers {
			cm, ok := c.(map[string]any)
			if !ok {
				continue
			}
			if image, ok := cm["image"].(string); ok {
				cm["image"] = changeImage(image, o)
			}
		}
		if err := unstructured.SetNestedSlice(obj.Object, containers, append(slices.Clone(spec), list)...); err != nil {
			return err
		}
	}
	return nil
}

// walk follows a JSON pointer's parts through maps and lists, and returns
// the map that holds the last part.
func walk(obj map[string]any, parts []string) (map[string]any, string, error) {
	var cur any = obj
	for i, p := range parts {
		if i == len(parts)-1 {
			m, ok := cur.(map[string]any)
			if !ok {
				return nil, "", fmt.Errorf("not an object")
			}
			if _, ok := m[p]; !ok {
				return nil, "", fmt.Errorf("no %s", p)
			}
			return m, p, nil
		}
		switch c := cur.(type) {
		case map[string]any:
			next, ok := c[p]
			if !ok {
				return nil, "", fmt.Errorf("no %s", p)
			}
			cur = next
		case []any:
			n, err := strconv.Atoi(p)
			if err != nil || n < 0 || n >= len(c) {
				return nil, "", fmt.Errorf("no index %s", p)
			}
			cur = c[n]
		default:
			return nil, "", fmt.Errorf("no %s", p)
		}
	}
	return nil, "", fmt.Errorf("empty path")
}

// changeImage changes one component of an image reference
// ([registry/]repository[:tag][@digest]).
func changeImage(image string, o policyv1.ImageOverrider) string {
	registry, repository, tag, digest := splitImage(image)
	change := func(cur string) string {
		switch o.Operator {
		case policyv1.OverrideAdd:
			return cur + o.Value
		case policyv1.OverrideReplace:
			return o.Value
		case policyv1.OverrideRemove:
			return ""
		}
		return cur
	}
	switch o.Component {
	case policyv1.ImageRegistry:
		registry = change(registry)
	case policyv1.ImageRepository:
		repository = change(repository)
	case policyv1.ImageTag:
		tag = change(tag)
		digest = "" // a new tag names another image than the digest
	}
	out := repository
	if registry != "" {
		out = registry + "/" + out
	}
	if tag != "" {
		out += ":" + tag
	}
	if digest != "" {
		out += "@" + digest
	}
	return out
}

func splitImage(image string) (registry, repository, tag, digest string) {
	rest := image
	if i := strings.Index(rest, "@"); i >= 0 {
		rest, digest = rest[:i], rest[i+1:]
	}
	if i := strings.LastIndex(rest, ":"); i >= 0 && !strings.Contains(rest[i:], "/") {
		rest, tag = rest[:i], rest[i+1:]
	}
	if i := strings.Index(rest, "/"); i >= 0 {
		first := rest[:i]
		if strings.ContainsAny(first, ".:") || first == "localhost" {
			return first, rest[i+1:], tag, digest
		}
	}
	return "", rest, tag, digest
}

func applyCommandArgs(obj *unstructured.Unstructured, o policyv1.CommandArgsOverrider, field string) error {
	spec := podSpecPath(obj)
	for _, list := range []string{"initContainers", "containers"} {
		path := append(slices.Clone(spec), list)
		containers, found, err := unstructured.NestedSlice(obj.Object, path...)
		if err != nil || !found {
			continue
		}
		for _, c := range containers {
			cm, ok := c.(map[string]any)
			if !ok || cm["name"] != o.ContainerName {
				continue
			}
			var cur []string
			if items, ok := cm[field].([]any); ok {
				for _, it := range items {
					if s, ok := it.(string); ok {
						cur = append(cur, s)
					}
				}
			}
			switch o.Operator {
			case policyv1.OverrideAdd:
				cur = append(cur, o.Value...)
			case policyv1.OverrideRemove:
				cur = slices.DeleteFunc(cur, func(s string) bool { return slices.Contains(o.Value, s) })
			}
			items := make([]any, len(cur))
			for i, s := range cur {
				items[i] = s
			}
			cm[field] = items
		}
		if err := unstructured.SetNestedSlice(obj.Object, containers, path...); err != nil {
			return err
		}
	}
	return nil
}

func applyMap(m map[string]string, o policyv1.LabelAnnotationOverrider) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	for k, v := range o.Value {
		switch o.Operator {
		case policyv1.OverrideAdd:
			m[k] = v
		case policyv1.OverrideReplace:
			if _, ok := m[k]; ok {
				m[k] = v
			}
		case policyv1.OverrideRemove:
			delete(m, k)
		}
	}
	return m
}

// applyPlaintext applies JSON patch operations; a path that does not exist
// (for replace and remove) is an error naming it.
func applyPlaintext(obj *unstructured.Unstructured, ops []policyv1.PlaintextOverrider) error {
	type op struct {
		Op    string          `json:"op"`
		Path  string          `json:"path"`
		Value json.RawMessage `json:"value,omitempty"`
	}
	patch := make([]op, 0, len(ops))
	for _, o := range ops {
		if o.Operator != policyv1.OverrideRemove && o.Value == nil {
			return fmt.Errorf("plaintext override %s %s: a value is needed", o.Operator, o.Path)
		}
		p := op{Op: o.Operator, Path: o.Path}
		if o.Value != nil {
			p.Value = o.Value.Raw
		}
		patch = append(patch, p)
	}
	raw, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	decoded, err := jsonpatch.DecodePatch(raw)
	if err != nil {
		return fmt.Errorf("plaintext override: %w", err)
	}
	doc, err := json.Marshal(obj.Object)
	if err != nil {
		return err
	}
	out, err := decoded.Apply(doc)
	if err != nil {
		return fmt.Errorf("plaintext override on %s %s: %w", obj.GetKind(), obj.GetName(), err)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		return err
	}
	obj.Object = m
	return nil
}

// pointer splits a JSON pointer into its unescaped parts.
func pointer(path string) []string {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(strings.ReplaceAll(p, "~1", "/"), "~0", "~")
	}
	return parts
}
