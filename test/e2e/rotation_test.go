package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	lotsev1 "github.com/lotse/lotse/api/v1alpha1"
)

// TestCredentialRotation: the service-account key and the etcd encryption
// key rotate in two phases. A token signed before the rotation works in
// phase 1 and fails after phase 2, one signed after works throughout;
// after the etcd key's phase 1 every Secret in etcd is encrypted with the
// new key, and it stays readable after phase 2 removed the old one.
// Requests that make no sense are refused with the fix.
func TestCredentialRotation(t *testing.T) {
	const name = "rotating"
	parallel(t)
	mc := mgmtClient(t)
	ctx := context.Background()
	c := &lotsev1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	if err := mc.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = lotseCLI(t, "cluster", "delete", name, "--wait", "--timeout", "5m") })
	diagnoseOnFailure(t, name)
	waitClusterReady(t, mc, name, 10*time.Minute)
	cs := tenantClient(t, name)

	if _, err := cs.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "robot"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token := func() string {
		t.Helper()
		tr, err := cs.CoreV1().ServiceAccounts("default").CreateToken(ctx, "robot", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	// works says whether the API takes a token (a 401 is false).
	works := func(tok string) bool {
		t.Helper()
		cfg := rest.AnonymousClientConfig(tenantConfig(t, name))
		cfg.BearerToken = tok
		var ok bool
		waitFor(t, time.Minute, "an answer to the token", func() (bool, error) {
			_, err := kubernetes.NewForConfigOrDie(cfg).Discovery().ServerVersion()
			switch {
			case err == nil:
				ok = true
				return true, nil
			case apierrors.IsUnauthorized(err):
				ok = false
				return true, nil
			}
			return false, err
		})
		return ok
	}
	if _, err := cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "precious"},
		StringData: map[string]string{"v": "kept"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	keysInEtcd := func() map[string]int {
		t.Helper()
		ec := etcdClient(t, name)
		defer ec.Close()
		resp, err := ec.Get(ctx, "/registry/secrets/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		keys := map[string]int{}
		for _, kv := range resp.Kvs {
			parts := strings.SplitN(string(kv.Value), ":", 6) // k8s:enc:aescbc:v1:NAME:...
			if len(parts) < 6 || parts[0] != "k8s" || parts[1] != "enc" {
				keys["plain"]++
				continue
			}
			keys[parts[2]+"/"+parts[4]]++
		}
		return keys
	}
	if k := keysInEtcd(); k["aescbc/key1"] == 0 || len(k) != 1 {
		t.Fatalf("secrets in etcd before the rotation: %v, want all under aescbc/key1", k)
	}
	oldToken := token()
	if !works(oldToken) {
		t.Fatal("a fresh token does not work")
	}

	t.Run("refusals", func(t *testing.T) {
		if out, err := lotseCLI(t, "cluster", "rotate", name, "service-account-key", "--complete"); err == nil || !strings.Contains(out, "no service-account-key rotation") {
			t.Errorf("completing a rotation never started: %v\n%s", err, out)
		}
		if out, err := lotseCLI(t, "cluster", "rotate", name, "kubelet"); err == nil || !strings.Contains(out, "unknown credential") {
			t.Errorf("rotate kubelet: %v\n%s", err, out)
		}
		// Straight through the annotation: the controller refuses too.
		annotateCluster(t, mc, name, lotsev1.OperationAnnotation, lotsev1.OperationRotateEtcdEncryptionKeyDone)
		waitClusterEvent(t, name, "RotationRefused", "no etcd-encryption-key rotation was started")
	})

	start := time.Now()
	out := mustCLI(t, "cluster", "rotate", name, "all")
	t.Logf("phase 1 of every rotation: %s (%s)", time.Since(start).Round(100*time.Millisecond), strings.TrimSpace(out))
	newToken := token()
	if !works(oldToken) || !works(newToken) {
		t.Errorf("phase 1: old token works %v, new token works %v; want both", works(oldToken), works(newToken))
	}
	if k := keysInEtcd(); k["aescbc/key2"] == 0 || len(k) != 1 {
		t.Errorf("secrets in etcd after phase 1: %v, want all under aescbc/key2", k)
	}
	if out, err := lotseCLI(t, "cluster", "rotate", name, "all"); err == nil || !strings.Contains(out, "complete it first") {
		t.Errorf("starting again while prepared: %v\n%s", err, out)
	}

	start = time.Now()
	mustCLI(t, "cluster", "rotate", name, "all", "--complete")
	t.Logf("phase 2 of every rotation: %s", time.Since(start).Round(100*time.Millisecond))
	cs = tenantClient(t, name) // the kubeconfig from before the CA rotation works no more
	if works(oldToken) {
		t.Error("the token signed with the old key still works after phase 2")
	}
	if !works(newToken) {
		t.Error("the token signed with the new key fails after phase 2")
	}
	s, err := cs.CoreV1().Secrets("default").Get(ctx, "precious", metav1.GetOptions{})
	if err != nil || string(s.Data["v"]) != "kept" {
		t.Errorf("the secret after the rotation: %v %q", err, s.Data["v"])
	}
	if k := keysInEtcd(); k["aescbc/key2"] == 0 || len(k) != 1 {
		t.Errorf("secrets in etcd after phase 2: %v, want all under aescbc/key2", k)
	}
	got := getCluster(t, mc, name)
	for kind, rs := range map[string]*lotsev1.RotationStatus{"service-account-key": got.Status.Credentials.Rotation.ServiceAccountKey,
		"etcd-encryption-key": got.Status.Credentials.Rotation.EtcdEncryptionKey, "ca": got.Status.Credentials.Rotation.CertificateAuthorities} {
		if rs == nil || rs.Phase != lotsev1.RotationCompleted || rs.LastCompletionTime == nil || rs.LastInitiationFinishedTime == nil {
			t.Errorf("status of the %s rotation: %+v", kind, rs)
		}
	}

	t.Run("a provider change rotates the etcd key", func(t *testing.T) {
		before := getCluster(t, mc, name)
		before.Spec.Encryption.Provider = "aesgcm"
		if err := mc.Update(ctx, before); err != nil {
			t.Fatal(err)
		}
		// Evidence newer than the change: the condition for its generation.
		waitFor(t, 5*time.Minute, "the data encrypted with aesgcm", func() (bool, error) {
			c := getCluster(t, mc, name)
			cond := meta.FindStatusCondition(c.Status.Conditions, lotsev1.ConditionEncryptionProviderCurrent)
			rs := c.Status.Credentials.Rotation.EtcdEncryptionKey
			return cond != nil && cond.ObservedGeneration == before.Generation && cond.Status == metav1.ConditionTrue &&
				rs != nil && rs.Phase == lotsev1.RotationPrepared, nil
		})
		if k := keysInEtcd(); k["aesgcm/key3"] == 0 || len(k) != 1 {
			t.Errorf("secrets in etcd after the provider change: %v, want all under aesgcm/key3", k)
		}
		mustCLI(t, "cluster", "rotate", name, "etcd-encryption-key", "--complete")
		s, err := cs.CoreV1().Secrets("default").Get(ctx, "precious", metav1.GetOptions{})
		if err != nil || string(s.Data["v"]) != "kept" {
			t.Errorf("the secret after the provider change: %v %q", err, s.Data["v"])
		}
		if k := keysInEtcd(); k["aesgcm/key3"] == 0 || len(k) != 1 {
			t.Errorf("secrets in etcd after completing the provider change: %v, want all under aesgcm/key3", k)
		}
	})
}
