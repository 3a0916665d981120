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

if ! "$LOTSE" cluster get "$NAME" >/dev/null 2>&1; then
  "$LOTSE" cluster create "$NAME" --wait
fi
"$LOTSE" cluster kubeconfig "$NAME" --output-file "$STATE/$NAME.kubeconfig"
KUBECTL=$("$LOTSE" release path kubectl)

echo
echo "\$ kubectl get namespaces"
"$KUBECTL" --kubeconfig "$STATE/$NAME.kubeconfig" get namespaces
echo
"$LOTSE" cluster list
cat <<MSG

Cluster "$NAME" is ready. Use it with:
  export KUBECONFIG=$STATE/$NAME.kubeconfig
  $KUBECTL get namespaces
Manage clusters with:
  export LOTSE_KUBECONFIG=$LOTSE_KUBECONFIG
  $LOTSE cluster list
Stop Lotse (clusters come back with the next \`make demo\`):
  make demo-down
MSG
