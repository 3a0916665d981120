package seed

import (
	"context"
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/controlplane"
)

func TestAPIServerService(t *testing.T) {
	internal := map[string]string{"lb.lotse.dev/internal": "true"}
	tests := []struct {
		name string
		spec lotsev1.SeedAPIServerService
		want controlplane.ServiceExposure
	}{
		// A Seed stored before the field (no default applied) gets the
		// default: a load balancer.
		{"unset", lotsev1.SeedAPIServerService{}, controlplane.ServiceExposure{LoadBalancer: true}},
		{"load balancer with annotations", lotsev1.SeedAPIServerService{Type: lotsev1.SeedServiceLoadBalancer, Annotations: internal}, controlplane.ServiceExposure{LoadBalancer: true, Annotations: internal}},
		{"node ports", lotsev1.SeedAPIServerService{Type: lotsev1.SeedServiceNodePort}, controlplane.ServiceExposure{}},
	}
	scheme := runtime.NewScheme()
	if err := lotsev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &lotsev1.Seed{ObjectMeta: metav1.ObjectMeta{Name: "s"}}
			s.Spec.ManagementCluster = true
			s.Spec.APIServerService = tt.spec
			c := &Connector{Reader: fake.NewClientBuilder().WithScheme(scheme).WithObjects(s).Build()}
			got, err := c.APIServerService(context.Background(), "s")
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	c := &Connector{Reader: fake.NewClientBuilder().WithScheme(scheme).Build()}
	if _, err := c.APIServerService(context.Background(), "missing"); err == nil {
		t.Error("a missing seed gave no error")
	}
}
