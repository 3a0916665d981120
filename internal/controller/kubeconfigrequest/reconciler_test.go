package kubeconfigrequest

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	kubefake "k8s.io/client-go/kubernetes/fake"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
	"github.com/lotse/lotse/internal/pki"
	"github.com/lotse/lotse/internal/userkubeconfig"
	"github.com/lotse/lotse/internal/userkubeconfig/userkubeconfigtest"
)

func setup(t *testing.T, clusterReady bool, objs ...client.Object) (*Reconciler, client.Client, *kubefake.Clientset) {
	t.Helper()
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = lotsev1.AddToScheme(s)
	cl := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "project-acme", Name: "web"}}
	cl.Status.KubeconfigSecret = "web-kubeconfig"
	if clusterReady {
		cl.Status.Conditions = []metav1.Condition{{Type: lotsev1.ConditionAPIServerAvailable, Status: metav1.ConditionTrue, Reason: "Up", LastTransitionTime: metav1.Now()}}
	}
	ca, err := pki.NewCA("web-ca")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := ca.Issue(pki.CertSpec{CommonName: "admin", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.KeyPEM(admin.Key)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "project-acme", Name: "web-kubeconfig", Labels: map[string]string{lotsev1.LabelCluster: "web"}},
		Data: map[string][]byte{"kubeconfig": pki.Kubeconfig("web", "https://127.0.0.1:6443", pki.CertPEM(ca.Cert), pki.CertPEM(admin.Cert), key, "admin")}}
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(append(objs, cl, secret)...).
		WithStatusSubresource(&lotsev1.KubeconfigRequest{}, &lotsev1.Cluster{}).Build()
	cs := kubefake.NewClientset()
	r := &Reconciler{Client: c, Recorder: events.NewFakeRecorder(10),
		Clients: func([]byte) (kubernetes.Interface, error) { return cs, nil }}
	return r, c, cs
}

func request(t *testing.T, user string, groups []string, role lotsev1.KubeconfigRole) (*lotsev1.KubeconfigRequest, []byte) {
	t.Helper()
	keyPEM, csrPEM, err := userkubeconfig.NewCSR(user, groups)
	if err != nil {
		t.Fatal(err)
	}
	return &lotsev1.KubeconfigRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: "project-acme", Name: "req", CreationTimestamp: metav1.Now()},
		Spec: lotsev1.KubeconfigRequestSpec{Cluster: "web", User: user, Role: role, ExpirationSeconds: 3600,
			CertificateSigningRequest: string(csrPEM)},
	}, keyPEM
}

func reconcileOnce(t *testing.T, r *Reconciler, c client.Client) *lotsev1.KubeconfigRequest {
	t.Helper()
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: "project-acme", Name: "req"}}); err != nil {
		t.Fatal(err)
	}
	kr := &lotsev1.KubeconfigRequest{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "project-acme", Name: "req"}, kr); err != nil {
		t.Fatal(err)
	}
	return kr
}

func TestViewerCertificateIsSigned(t *testing.T) {
	kr, _ := request(t, "bob", []string{userkubeconfig.ViewerGroup}, lotsev1.KubeconfigViewer)
	r, c, cs := setup(t, true, kr)
	userkubeconfigtest.NewFakeSigner(t, cs, false)
	got := reconcileOnce(t, r, c)
	cond := meta.FindStatusCondition(got.Status.Conditions, lotsev1.ConditionIssued)
	if cond == nil || cond.Status != metav1.ConditionTrue {
		t.Fatalf("Issued: %+v", cond)
	}
	block, _ := pem.Decode([]byte(got.Status.Certificate))
	if block == nil {
		t.Fatalf("no certificate in status: %q", got.Status.Certificate)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "bob" || len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != userkubeconfig.ViewerGroup {
		t.Fatalf("certificate for %s", cert.Subject)
	}
	if got.Status.Server != "https://127.0.0.1:6443" || !strings.Contains(got.Status.CertificateAuthority, "BEGIN CERTIFICATE") || got.Status.ExpirationTimestamp == nil {
		t.Fatalf("status %+v", got.Status)
	}
	// The viewer group is bound to view in the cluster.
	crb, err := cs.RbacV1().ClusterRoleBindings().Get(context.Background(), userkubeconfig.ViewerGroup, metav1.GetOptions{})
	if err != nil || crb.RoleRef.Name != "view" {
		t.Fatalf("viewer binding: %v %+v", err, crb)
	}
	// Answered requests are removed an hour after the certificate ends.
	r.Now = func() time.Time { return got.Status.ExpirationTimestamp.Add(keepAfterExpiry + time.Second) }
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(got)}); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(got), &lotsev1.KubeconfigRequest{}); !apierrors.IsNotFound(err) {
		t.Fatalf("request kept after it ended: %v", err)
	}
}

func TestRequestsThatCannotBeGranted(t *testing.T) {
	for _, tc := range []struct {
		name         string
		user         string
		groups       []string
		role         lotsev1.KubeconfigRole
		clusterReady bool
		reason, msg  string
		unlabelled   bool
	}{
		{"the CSR names another user", "mallory", []string{userkubeconfig.ViewerGroup}, lotsev1.KubeconfigViewer, true, "Refused", `asks for user "mallory"`, false},
		{"the CSR asks for the admin group as a viewer", "bob", []string{userkubeconfig.AdminGroup}, lotsev1.KubeconfigViewer, true, "Refused", "groups [lotse:cluster-admins]", false},
		{"the cluster is not up", "bob", []string{userkubeconfig.ViewerGroup}, lotsev1.KubeconfigViewer, false, "ClusterNotReady", "does not answer yet", false},
		{"a kubeconfig Secret Lotse did not write", "bob", []string{userkubeconfig.ViewerGroup}, lotsev1.KubeconfigViewer, true, "ClusterNotReady", "is not Lotse's", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kr, _ := request(t, tc.user, tc.groups, tc.role)
			kr.Spec.User = "bob"
			r, c, cs := setup(t, tc.clusterReady, kr)
			signer := userkubeconfigtest.NewFakeSigner(t, cs, false)
			if tc.unlabelled {
				secret := &corev1.Secret{}
				if err := c.Get(context.Background(), client.ObjectKey{Namespace: "project-acme", Name: "web-kubeconfig"}, secret); err != nil {
					t.Fatal(err)
				}
				secret.Labels = nil
				if err := c.Update(context.Background(), secret); err != nil {
					t.Fatal(err)
				}
			}
			got := reconcileOnce(t, r, c)
			cond := meta.FindStatusCondition(got.Status.Conditions, lotsev1.ConditionIssued)
			if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != tc.reason || !strings.Contains(cond.Message, tc.msg) {
				t.Fatalf("Issued: %+v", cond)
			}
			if got.Status.Certificate != "" {
				t.Fatal("a certificate was issued")
			}
			if len(signer.Seen()) != 0 {
				t.Fatal("the cluster was asked to sign")
			}
		})
	}
}
