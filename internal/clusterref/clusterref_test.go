package clusterref

import "testing"

func TestParseKey(t *testing.T) {
	tests := []struct {
		in   string
		want Ref
		ok   bool
	}{
		{"clusters/default/c1", Ref{"default", "c1"}, true},
		{"clusters/team-a/web/etcd-0", Ref{"team-a", "web"}, true},
		{"clusters/ns/c/machines/c-w-abc/kubelet-0", Ref{"ns", "c"}, true},
		{"management/etcd-0", Ref{}, false},
		{"clusters/default", Ref{}, false},
		{"clusters//c1", Ref{}, false},
		{"", Ref{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := ParseKey(tt.in)
			if got != tt.want || ok != tt.ok {
				t.Errorf("ParseKey(%q) = %v, %t; want %v, %t", tt.in, got, ok, tt.want, tt.ok)
			}
			if ok {
				if again, _ := ParseKey(got.Key()); again != got {
					t.Errorf("ParseKey(%q.Key()) = %v", got, again)
				}
			}
		})
	}
	if k := (Ref{Namespace: "default", Name: "c1"}).Key(); k != "clusters/default/c1" {
		t.Errorf("Key() = %q", k)
	}
}
