package machine

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// TestEqualMachineStatusSeesEveryField: a change of any status field is a
// change (a field the comparison forgets is never written).
func TestEqualMachineStatusSeesEveryField(t *testing.T) {
	base := lotsev1.MachineStatus{}
	typ := reflect.TypeOf(base)
	for i := range typ.NumField() {
		f := typ.Field(i)
		t.Run(f.Name, func(t *testing.T) {
			changed := base
			v := reflect.ValueOf(&changed).Elem().Field(i)
			switch f.Name {
			case "Addresses":
				changed.Addresses = []lotsev1.MachineAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.1"}}
			case "Conditions":
				changed.Conditions = []metav1.Condition{{Type: "NodeReady", Status: metav1.ConditionTrue}}
			default:
				switch v.Kind() {
				case reflect.String:
					v.SetString("x")
				case reflect.Int64, reflect.Int32, reflect.Int:
					v.SetInt(1)
				default:
					t.Fatalf("field %s of kind %s: teach this test how to change it", f.Name, v.Kind())
				}
			}
			if equalMachineStatus(&base, &changed) {
				t.Errorf("equalMachineStatus ignores a change of %s", f.Name)
			}
		})
	}
}
