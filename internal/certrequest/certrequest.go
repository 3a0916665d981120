// Package certrequest holds what Lotse's approvers of
// CertificateSigningRequests (kubelet serving certificates, fleet agents'
// identities) share.
package certrequest

import certificatesv1 "k8s.io/api/certificates/v1"

// Decided reports whether a request was approved or denied already: an
// approver leaves it alone then.
func Decided(csr *certificatesv1.CertificateSigningRequest) bool {
	for _, c := range csr.Status.Conditions {
		if c.Type == certificatesv1.CertificateApproved || c.Type == certificatesv1.CertificateDenied {
			return true
		}
	}
	return false
}
