package process

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/lotse/lotse/internal/controlplane"
	"github.com/lotse/lotse/internal/pki"
)

// Growing etcd from one member to three (a single-replica control plane
// made highly available). Each new member joins as a learner, which does
// not vote, and is promoted once it has caught up with the leader: adding
// a voting member that is not running yet would cost the quorum (two of
// two) until it is. One member at a time, each step decided from the
// cluster's member list, so a lotse killed in between continues.

// etcdClient connects to the members that are part of the cluster.
func (b *Backend) etcdClient(l Layout, p pki.ClusterPKI) (*clientv3.Client, error) {
	var endpoints []string
	for _, i := range l.etcdMembers() {
		endpoints = append(endpoints, fmt.Sprintf("https://127.0.0.1:%d", l.EtcdClient[i]))
	}
	return b.etcdClientAt(p, endpoints...)
}

// etcdClientAt connects to the given etcd endpoints with the admin certificate.
func (b *Backend) etcdClientAt(p pki.ClusterPKI, endpoints ...string) (*clientv3.Client, error) {
	return controlplane.EtcdAdminClient(p, endpoints...)
}

// addEtcdMember takes the next pending member one step further: add it as
// a learner, record how it joins, start it, promote it once it caught up,
// and drop it from the pending list once it is a healthy voting member.
func (b *Backend) addEtcdMember(ctx context.Context, spec controlplane.Spec, l Layout, p pki.ClusterPKI) (bool, string, error) {
	i := l.EtcdPending[0]
	name := fmt.Sprintf("etcd-%d", i)
	peerURL := fmt.Sprintf("https://127.0.0.1:%d", l.EtcdPeer[i])
	cli, err := b.etcdClient(l, p)
	if err != nil {
		return false, "", err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	list, err := cli.MemberList(ctx)
	if err != nil {
		return false, fmt.Sprintf("adding etcd member %s: listing members: %v", name, err), nil
	}
	members := list.Members
	member := controlplane.FindEtcdMember(members, peerURL)
	if member == nil {
		resp, err := cli.MemberAddAsLearner(ctx, []string{peerURL})
		if err != nil {
			return false, fmt.Sprintf("adding etcd member %s: %v", name, err), nil
		}
		log.FromContext(ctx).Info("etcd: added a learner", "member", name, "peer", peerURL)
		members, member = resp.Members, resp.Member
	}
	if _, recorded := l.EtcdJoin[i]; !recorded {
		var initial []string
		for _, m := range members {
			n := m.Name
			if m.ID == member.ID {
				n = name
			}
			if n == "" || len(m.PeerURLs) == 0 {
				return false, fmt.Sprintf("adding etcd member %s: member %x has not started yet", name, m.ID), nil
			}
			initial = append(initial, n+"="+m.PeerURLs[0])
		}
		slices.Sort(initial)
		join := EtcdJoin{InitialCluster: strings.Join(initial, ","), State: "existing"}
		if l, err = b.updateLayout(spec.Key, func(l *Layout) { l.EtcdJoin[i] = join }); err != nil {
			return false, "", err
		}
	}
	if err := b.Supervisor.Ensure(b.etcdSpec(spec, l, p, i)); err != nil {
		return false, "", err
	}
	if member.IsLearner {
		if _, err := cli.MemberPromote(ctx, member.ID); err != nil {
			// Most often "can only promote a learner member which is in
			// sync with leader": it is still catching up.
			return false, fmt.Sprintf("adding etcd member %s: a learner catching up (%v)", name, err), nil
		}
		log.FromContext(ctx).Info("etcd: promoted a learner", "member", name)
	}
	if h := b.etcdHealth(ctx, l, p); i >= len(h) || !h[i].Healthy {
		return false, fmt.Sprintf("adding etcd member %s: waiting for it to be healthy", name), nil
	}
	if _, err := b.updateLayout(spec.Key, func(l *Layout) { l.EtcdPending = slices.DeleteFunc(l.EtcdPending, func(m int) bool { return m == i }) }); err != nil {
		return false, "", err
	}
	return false, fmt.Sprintf("etcd member %s joined", name), nil
}

// updateLayout changes the recorded layout of a control plane under the
// layout lock and returns it.
func (b *Backend) updateLayout(key string, change func(*Layout)) (Layout, error) {
	layoutMu.Lock()
	defer layoutMu.Unlock()
	l, err := b.LoadLayout(key)
	if err != nil {
		return l, err
	}
	if l.EtcdJoin == nil {
		l.EtcdJoin = map[int]EtcdJoin{}
	}
	change(&l)
	return l, b.saveLayout(key, l)
}

// etcdLeader is the index of the member that leads, or -1 if none says so.
func (b *Backend) etcdLeader(ctx context.Context, l Layout, p pki.ClusterPKI) int {
	members := l.etcdMembers()
	if len(members) < 2 {
		return -1
	}
	cli, err := b.etcdClient(l, p)
	if err != nil {
		return -1
	}
	defer cli.Close()
	for _, i := range members {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := cli.Status(sctx, fmt.Sprintf("https://127.0.0.1:%d", l.EtcdClient[i]))
		cancel()
		if err == nil && st.Leader == st.Header.MemberId {
			return i
		}
	}
	return -1
}

// handOverLeadership moves the etcd leadership away from member i before
// it is replaced, to the first other healthy voting member, so the
// cluster does not wait for an election.
func (b *Backend) handOverLeadership(ctx context.Context, l Layout, p pki.ClusterPKI, i int) error {
	members := l.etcdMembers()
	if len(members) < 2 {
		return nil
	}
	endpoint := fmt.Sprintf("https://127.0.0.1:%d", l.EtcdClient[i])
	cli, err := b.etcdClientAt(p, endpoint)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := cli.Status(ctx, endpoint)
	if err != nil {
		return nil // not answering: it leads nothing worth handing over
	}
	if st.Leader != st.Header.MemberId {
		return nil
	}
	list, err := cli.MemberList(ctx)
	if err != nil {
		return err
	}
	health := b.etcdHealth(ctx, l, p)
	// The most caught-up healthy member takes over: the leader drops
	// proposals until the transfer ends, and a transferee that has every
	// entry already ends it at once.
	var to *etcdserverpb.Member
	var toApplied uint64
	for _, m := range list.Members {
		if m.ID == st.Header.MemberId || m.IsLearner || len(m.ClientURLs) == 0 {
			continue
		}
		healthy := false
		for j, port := range l.EtcdClient {
			if slices.Contains(m.ClientURLs, fmt.Sprintf("https://127.0.0.1:%d", port)) && j < len(health) && health[j].Healthy {
				healthy = true
			}
		}
		if !healthy {
			continue
		}
		// Each its own short deadline: one member that stopped answering
		// after the health probe must not use up the hand-over's time.
		sctx, scancel := context.WithTimeout(ctx, time.Second)
		ms, err := cli.Status(sctx, m.ClientURLs[0])
		scancel()
		if err != nil {
			continue
		}
		if to == nil || ms.RaftAppliedIndex > toApplied {
			to, toApplied = m, ms.RaftAppliedIndex
		}
	}
	if to == nil {
		return fmt.Errorf("no other healthy member to take the etcd leadership")
	}
	if _, err := cli.MoveLeader(ctx, to.ID); err != nil {
		return fmt.Errorf("moving the etcd leadership to %s: %w", to.Name, err)
	}
	log.FromContext(ctx).Info("etcd: moved the leadership before a replacement", "from", fmt.Sprintf("etcd-%d", i), "to", to.Name)
	return nil
}
