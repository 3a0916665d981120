#!/bin/bash
# trace-create.sh STATE_DIR NAME: create a workerless Cluster against the
# `lotse up` on STATE_DIR and print, in milliseconds from the request, when
# its files appear, which of its API server's /readyz checks still fail
# (polled every 50 ms), and when the Cluster's APIServerAvailable turns True.
# Delete the cluster afterwards (lotse cluster delete NAME).
set -euo pipefail
STATE=${1:?usage: $0 STATE_DIR NAME}
NAME=${2:?usage: $0 STATE_DIR NAME}
KUBECTL=${KUBECTL:-$(ls -d "${LOTSE_CACHE_DIR:-$HOME/.cache/lotse}"/kubernetes/*/bin/kubectl | sort -V | tail -1)}
export KUBECONFIG=$STATE/management.kubeconfig
dir=$STATE/clusters/default/$NAME
t0=$(date +%s%N)
ms() { echo $(( ($(date +%s%N) - t0) / 1000000 )); }
"$KUBECTL" apply -f - >/dev/null <<Y
apiVersion: lotse.dev/v1alpha1
kind: Cluster
metadata: {name: $NAME, namespace: default}
spec: {}
Y
echo "$(ms) ms: created"
until [ -f "$dir/ports.json" ]; do sleep 0.02; done; echo "$(ms) ms: ports chosen"
until [ -f "$dir/pki/admin.kubeconfig" ]; do sleep 0.02; done; echo "$(ms) ms: PKI written"
port=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['apiServer'][0])" "$dir/ports.json")
last=""
while :; do
  if out=$(curl -s --max-time 1 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" \
      "https://127.0.0.1:$port/readyz?verbose" 2>/dev/null); then
    cur=$(grep '^\[-\]' <<<"$out" | sed 's/ failed.*//' | tr '\n' ' ' || true)
    [ -n "$cur" ] || cur=READY
  else
    cur="no answer"
  fi
  [ "$cur" != "$last" ] && { echo "$(ms) ms: $cur"; last=$cur; }
  [ "$cur" = READY ] && break
  sleep 0.05
done
until "$KUBECTL" get cluster "$NAME" -o jsonpath='{.status.conditions[?(@.type=="APIServerAvailable")].status}' | grep -q True; do
  sleep 0.05
done
echo "$(ms) ms: APIServerAvailable seen by a client"
