package seed

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/lotse/lotse/internal/controlplane"
)

// growEtcd takes etcd one step from its members toward three, when a
// control plane is made highly available. The next member is added as a
// learner, which does not vote (a voting member that is not running yet
// would cost the quorum until it is), its pod started as an existing
// member while a partition keeps the others as they are, and it is
// promoted once it has caught up. Each step is decided from etcd's member
// list, so a manager that stops in between goes on where it was. Once the
// third member votes, the ordinary rollout brings every member to the
// same template, one at a time, and the API servers and the rest follow
// with their second replicas.
func (b *Backend) growEtcd(ctx context.Context, sc *seedClient, spec controlplane.Spec, r render) (bool, string, error) {
	l := r.layout
	i := l.EtcdJoined
	name := memberName(i)
	peerURL := fmt.Sprintf("https://%s:%d", l.etcdHost(i), etcdPeerPort)
	// The first member always votes: the member list is asked there.
	port, stop, err := sc.forward(l.Namespace, memberName(0), etcdClientPort)
	if err != nil {
		return false, fmt.Sprintf("adding etcd member %s: reaching %s: %v", name, memberName(0), err), nil
	}
	defer stop()
	cli, err := controlplane.EtcdAdminClient(b.PKI(spec.Key), fmt.Sprintf("https://127.0.0.1:%d", port))
	if err != nil {
		return false, "", err
	}
	defer cli.Close()
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	list, err := cli.MemberList(cctx)
	if err != nil {
		return false, fmt.Sprintf("adding etcd member %s: listing members: %v", name, err), nil
	}
	member := controlplane.FindEtcdMember(list.Members, peerURL)
	if member == nil {
		resp, err := cli.MemberAddAsLearner(cctx, []string{peerURL})
		if err != nil {
			return false, fmt.Sprintf("adding etcd member %s: %v", name, err), nil
		}
		log.FromContext(ctx).Info("etcd on seed: added a learner", "member", name, "seed", l.Seed)
		member = resp.Member
	}
	if err := sc.apply(ctx, r.objects(stageEtcd)...); err != nil {
		return false, "", err
	}
	if member.IsLearner {
		if _, err := cli.MemberPromote(cctx, member.ID); err != nil {
			// Most often "can only promote a learner member which is in
			// sync with leader": it is starting or catching up.
			return false, fmt.Sprintf("adding etcd member %s: a learner catching up (%v)", name, err), nil
		}
		log.FromContext(ctx).Info("etcd on seed: promoted a learner", "member", name, "seed", l.Seed)
	}
	if !sc.podIsReady(ctx, l.Namespace, name) {
		return false, fmt.Sprintf("adding etcd member %s: waiting for its pod to be ready", name), nil
	}
	l.EtcdJoined = i + 1
	if l.EtcdJoined == maxEtcdMembers {
		l.EtcdJoined = 0 // grown
	}
	b.layoutMu.Lock()
	err = b.saveLayout(spec.Key, l)
	b.layoutMu.Unlock()
	if err != nil {
		return false, "", err
	}
	if err := b.saveState(ctx, sc, spec.Key, l); err != nil {
		return false, "", err
	}
	return false, fmt.Sprintf("etcd member %s joined", name), nil
}

func (sc *seedClient) podIsReady(ctx context.Context, namespace, name string) bool {
	p, err := sc.kube.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil || p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
