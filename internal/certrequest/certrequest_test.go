package certrequest

import (
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
)

func TestDecided(t *testing.T) {
	for _, tc := range []struct {
		name  string
		conds []certificatesv1.CertificateSigningRequestCondition
		want  bool
	}{
		{"pending", nil, false},
		{"approved", []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue}}, true},
		{"denied", []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateDenied, Status: corev1.ConditionTrue}}, true},
		{"failed only", []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateFailed, Status: corev1.ConditionTrue}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			csr := &certificatesv1.CertificateSigningRequest{Status: certificatesv1.CertificateSigningRequestStatus{Conditions: tc.conds}}
			if got := Decided(csr); got != tc.want {
				t.Errorf("Decided = %v, want %v", got, tc.want)
			}
		})
	}
}
