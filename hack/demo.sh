#!/usr/bin/env bash
# make demo: start Lotse in the background, create a cluster and use it with kubectl.
set -euo pipefail
cd "$(dirname "$0")/.."

LOTSE=${LOTSE:-$PWD/bin/lotse}
STATE=${LOTSE_STATE_DIR:-$HOME/.local/state/lotse}
NAME=${DEMO_CLUSTER:-demo}
mkdir -p "$STATE"
export LOTSE_KUBECONFIG=$STATE/management.kubeconfig

if [ -f "$STATE/lotse.pid" ] && kill -0 "$(cat "$STATE/lotse.pid")" 2>/dev/null; then
  echo "lotse is already running (pid $(cat "$STATE/lotse.pid"))"
else
  echo "starting lotse up --state-dir $STATE (log: $STATE/lotse-up.log)"
  setsid "$LOTSE" up --state-dir "$STATE" >"$STATE/lotse-up.log" 2>&1 </dev/null &
  echo $! >"$STATE/lotse.pid"
  for _ in $(seq 1 600); do
    grep -q "lotse is up" "$STATE/lotse-up.log" 2>/dev/null && break
    if ! kill -0 "$(cat "$STATE/lotse.pid")" 2>/dev/null; then cat "$STATE/lotse-up.log"; exit 1; fi
    sleep 0.5
  done
  grep -q "lotse is up" "$STATE/lotse-up.log" || { cat "$STATE/lotse-up.log"; exit 1; }
fi
cat "$STATE/lotse-up.log"

KUBECTL=$("$LOTSE" release path kubectl)
export KUBECONFIG_MGMT=$LOTSE_KUBECONFIG

# The sample app: the project's echo server, packed into an offline image.
mkdir -p bin
CGO_ENABLED=0 go build -trimpath -o bin/echo ./test/images/echo
"$LOTSE" image add echo:demo --binary bin/echo

if ! "$LOTSE" cluster get "$NAME" >/dev/null 2>&1; then
  cat <<YAML | "$KUBECTL" --kubeconfig "$LOTSE_KUBECONFIG" apply -f -
apiVersion: lotse.dev/v1alpha1
kind: Cluster
metadata:
  name: $NAME
spec:
  workers:
  - name: web
    minimum: 2
    maximum: 4
    labels: {tier: web}
  - name: batch
    minimum: 1
    maximum: 2
    labels: {tier: batch}
YAML
fi
echo "waiting for cluster $NAME (control plane, 3 nodes, CoreDNS); the first time also builds CoreDNS"
"$KUBECTL" --kubeconfig "$LOTSE_KUBECONFIG" wait --for=condition=Ready "cluster/$NAME" --timeout=20m
"$LOTSE" cluster kubeconfig "$NAME" --output-file "$STATE/$NAME.kubeconfig"
export KUBECONFIG=$STATE/$NAME.kubeconfig

"$KUBECTL" get deployment echo >/dev/null 2>&1 || "$KUBECTL" create deployment echo --image=registry.lotse.local/echo:demo --replicas=3 --port=8080
"$KUBECTL" get service echo >/dev/null 2>&1 || "$KUBECTL" expose deployment echo --port=80 --target-port=8080 --type=NodePort
"$KUBECTL" get service echo-lb >/dev/null 2>&1 || "$KUBECTL" expose deployment echo --name=echo-lb --port=80 --target-port=8080 --type=LoadBalancer
"$KUBECTL" rollout status deployment/echo --timeout=5m
LB_IP=""
for _ in $(seq 1 60); do
  LB_IP=$("$KUBECTL" get service echo-lb -o jsonpath='{.status.loadBalancer.ingress[0].ip}')
  [ -n "$LB_IP" ] && break
  sleep 1
done

NODE_IP=$("$KUBECTL" get nodes -o jsonpath='{.items[0].status.addresses[?(@.type=="InternalIP")].address}')
NODE_PORT=$("$KUBECTL" get service echo -o jsonpath='{.spec.ports[0].nodePort}')
echo
echo "\$ kubectl get nodes -o wide"
"$KUBECTL" get nodes -o wide
echo
echo "\$ kubectl get pods -o wide"
"$KUBECTL" get pods -o wide
echo
echo "\$ curl http://$NODE_IP:$NODE_PORT/"
for _ in 1 2 3; do curl -s --max-time 5 "http://$NODE_IP:$NODE_PORT/" || true; done
echo
echo "\$ kubectl get --raw /api/v1/namespaces/default/services/http:echo:80/proxy/   # API server -> tunnel -> pod"
"$KUBECTL" get --raw /api/v1/namespaces/default/services/http:echo:80/proxy/ || true
echo
echo "\$ curl http://$LB_IP/   # the LoadBalancer Service echo-lb"
curl -s --max-time 5 "http://$LB_IP/" || true
echo
echo "\$ kubectl top nodes   # metrics-server, through the tunnel"
for _ in $(seq 1 30); do "$KUBECTL" top nodes 2>/dev/null && break; sleep 2; done
cat <<MSG

Cluster "$NAME" runs 3 nodes in 2 worker pools and a sample app. Use it with:
  export KUBECONFIG=$STATE/$NAME.kubeconfig
  $KUBECTL get pods -o wide
  curl http://$NODE_IP:$NODE_PORT/            # the app, through a NodePort
  curl http://$LB_IP/                         # the app, through its LoadBalancer Service
  $KUBECTL top pods -A                        # resource metrics
  $KUBECTL get --raw /api/v1/namespaces/default/services/http:echo:80/proxy/   # through the API server's tunnel
  $KUBECTL logs deploy/echo; $KUBECTL exec deploy/echo -- /echo get http://echo/
Manage clusters with:
  export LOTSE_KUBECONFIG=$LOTSE_KUBECONFIG
  $LOTSE cluster list
Stop Lotse (clusters come back with the next \`make demo\`):
  make demo-down
MSG
