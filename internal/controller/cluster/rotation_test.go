package cluster

import (
	"slices"
	"testing"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/controlplane"
)

func rotations(ca, sa, etcd *lotsev1.RotationStatus) *lotsev1.ClusterStatus {
	return &lotsev1.ClusterStatus{Credentials: &lotsev1.CredentialsStatus{Rotation: lotsev1.CredentialsRotation{
		CertificateAuthorities: ca, ServiceAccountKey: sa, EtcdEncryptionKey: etcd}}}
}

func phase(p, step string) *lotsev1.RotationStatus {
	return &lotsev1.RotationStatus{Phase: p, Step: step}
}

// TestCompletable: completing several kinds completes those prepared, so
// `all --complete` works when one kind was never started.
func TestCompletable(t *testing.T) {
	prepared, completed := phase(lotsev1.RotationPrepared, ""), phase(lotsev1.RotationCompleted, "")
	tests := []struct {
		name     string
		status   *lotsev1.ClusterStatus
		kinds    []string
		complete bool
		want     []string
	}{
		{"start: unchanged", rotations(nil, prepared, prepared), RotationKinds, false, RotationKinds},
		{"CA never started: the prepared two", rotations(nil, prepared, prepared), RotationKinds, true, []string{KindServiceAccountKey, KindEtcdEncryptionKey}},
		{"nothing prepared: all (refused with the reason)", rotations(completed, completed, nil), RotationKinds, true, RotationKinds},
		{"one kind: unchanged", rotations(nil, prepared, nil), []string{KindCA}, true, []string{KindCA}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.kinds
			if tt.complete {
				got = CompletableKinds(tt.status, tt.kinds)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("kinds to complete = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestRotationStages: what the control plane applies for each phase.
func TestRotationStages(t *testing.T) {
	tests := []struct {
		name   string
		status *lotsev1.ClusterStatus
		want   controlplane.Rotation
	}{
		{"none", &lotsev1.ClusterStatus{}, controlplane.Rotation{}},
		{"CA adds", rotations(phase(lotsev1.RotationPreparing, "add"), nil, nil), controlplane.Rotation{CA: "add"}},
		{"CA reissues", rotations(phase(lotsev1.RotationPreparing, "reissue"), nil, nil), controlplane.Rotation{CA: "reissue"}},
		{"CA prepared: nothing to apply", rotations(phase(lotsev1.RotationPrepared, ""), nil, nil), controlplane.Rotation{}},
		{"CA drops", rotations(phase(lotsev1.RotationCompleting, "drop"), nil, nil), controlplane.Rotation{CA: "drop"}},
		{"etcd key rewrites under the promoted key", rotations(nil, nil, phase(lotsev1.RotationPreparing, "rewrite")), controlplane.Rotation{EncryptionKey: "promote"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rotationStages(tt.status); got != tt.want {
				t.Errorf("rotationStages = %+v, want %+v", got, tt.want)
			}
		})
	}
}
