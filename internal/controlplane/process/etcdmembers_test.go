package process

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestGrowEtcd turns a real single-member etcd with data into three voting
// members, the way a cluster becomes highly available: the layout grows
// (the endpoint port goes to the load balancer), each new member joins as
// a learner and is promoted, and the data written before is readable from
// every member.
func TestGrowEtcd(t *testing.T) {
	b, spec := realEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := b.PKI(spec.Key)
	before := mustLayout(t, b, spec)
	cli, err := b.etcdClient(before, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/registry/kept", "yes"); err != nil {
		t.Fatal(err)
	}
	cli.Close()

	spec.HighAvailability = true
	l, err := b.ensureLayout(spec)
	if err != nil {
		t.Fatal(err)
	}
	if l.LoadBalancer != before.APIServer[0] || len(l.APIServer) != 2 || l.APIServer[0] == before.APIServer[0] {
		t.Errorf("layout after growing: balancer %d, API servers %v (before: %v); the balancer must take the old port", l.LoadBalancer, l.APIServer, before.APIServer)
	}
	if len(l.EtcdClient) != 3 || l.EtcdClient[0] != before.EtcdClient[0] || len(l.EtcdPending) != 2 {
		t.Fatalf("etcd layout after growing: clients %v, pending %v", l.EtcdClient, l.EtcdPending)
	}
	if again, _ := b.ensureLayout(spec); again.LoadBalancer != l.LoadBalancer || len(again.EtcdClient) != 3 {
		t.Errorf("a second ensureLayout changed the layout: %+v", again)
	}
	// etcd-0 keeps its flags: it is not restarted by the change.
	if got, want := b.etcdSpec(spec, l, p, 0).Hash(), b.etcdSpecs(spec, before, p)[0].Hash(); got != want {
		t.Error("etcd-0's process spec changed with the layout")
	}

	var last string
	for {
		l = mustLayout(t, b, spec)
		done, msg, err := b.ensureEtcd(ctx, spec, l, p)
		if err != nil {
			t.Fatal(err)
		}
		if done {
			break
		}
		if msg != last {
			t.Log(msg)
			last = msg
		}
		select {
		case <-ctx.Done():
			t.Fatalf("etcd did not grow: %s", msg)
		case <-time.After(200 * time.Millisecond):
		}
	}
	if len(l.EtcdPending) != 0 || len(l.EtcdJoin) != 3 {
		t.Errorf("layout at the end: pending %v, joins %v", l.EtcdPending, l.EtcdJoin)
	}
	cli, err = b.etcdClient(l, p)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	members, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(members.Members) != 3 {
		t.Fatalf("%d members, want 3", len(members.Members))
	}
	for _, m := range members.Members {
		if m.IsLearner {
			t.Errorf("member %s is still a learner", m.Name)
		}
		if len(m.ClientURLs) == 0 {
			t.Errorf("member %x never started", m.ID)
			continue
		}
		// Read from this member alone, serializably: it has the data.
		one, err := b.etcdClientAt(p, m.ClientURLs[0])
		if err != nil {
			t.Fatal(err)
		}
		resp, err := one.Get(ctx, "/registry/kept", clientv3.WithSerializable())
		one.Close()
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "yes" {
			t.Errorf("member %s: %v, %v", m.Name, resp, err)
		}
	}
	// Converged: another pass changes nothing and restarts nothing.
	pids := map[string]int{}
	for _, s := range b.etcdSpecs(spec, l, p) {
		st, _ := b.Supervisor.Status(s.Name)
		pids[s.Name] = st.PID
	}
	if done, msg, err := b.ensureEtcd(ctx, spec, l, p); !done || err != nil {
		t.Errorf("ensureEtcd on the grown etcd = %v, %q, %v", done, msg, err)
	}
	for name, pid := range pids {
		if st, _ := b.Supervisor.Status(name); st.PID != pid {
			t.Errorf("%s restarted after the growth", name)
		}
	}
	// A leader about to be replaced hands its leadership over.
	leaderOf := func() (uint64, int) {
		st, err := cli.Status(ctx, cli.Endpoints()[0])
		if err != nil {
			t.Fatal(err)
		}
		for i, port := range l.EtcdClient {
			one, err := b.etcdClientAt(p, fmt.Sprintf("https://127.0.0.1:%d", port))
			if err != nil {
				t.Fatal(err)
			}
			s, err := one.Status(ctx, one.Endpoints()[0])
			one.Close()
			if err == nil && s.Header.MemberId == st.Leader {
				return st.Leader, i
			}
		}
		t.Fatalf("leader %x is none of the members", st.Leader)
		return 0, 0
	}
	leader, idx := leaderOf()
	if err := b.handOverLeadership(ctx, l, p, idx); err != nil {
		t.Fatal(err)
	}
	if after, _ := leaderOf(); after == leader {
		t.Errorf("etcd-%d still leads after handing over", idx)
	}
	// The way back is refused.
	spec.HighAvailability = false
	if _, err := b.ensureLayout(spec); err == nil {
		t.Error("a highly available layout shrank back to one replica")
	}
}
