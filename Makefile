# Lotse. `make demo` runs the main job, `make test` runs every test.
# Everything lands in the cache directory (LOTSE_CACHE_DIR, default ~/.cache/lotse)
# or in bin/; both commands install what they need themselves.

SHELL := /bin/bash
GO ?= go
export GOTOOLCHAIN := local
LOTSE_CACHE_DIR ?= $(HOME)/.cache/lotse
export LOTSE_CACHE_DIR
LOTSE := $(CURDIR)/bin/lotse
K8S_VERSION ?= $(shell sed -n 's/^	{Version: "\([0-9.]*\)".*/\1/p' internal/releases/catalog.go | head -1)
# The upgrade tests start from the newest patch of the minor before the default.
UPGRADE_FROM ?= $(shell sed -n 's/^	{Version: "\([0-9.]*\)".*/\1/p' internal/releases/catalog.go | sed -n 2p)
CONTROLLER_GEN := $(GO) tool -modfile=hack/tools/go.mod controller-gen
STATICCHECK := $(GO) tool -modfile=hack/tools/go.mod staticcheck

.PHONY: all build generate cni-manifests deps releases test-releases test unit e2e lint demo demo-down bench peers clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -o $(LOTSE) ./cmd/lotse

## generate: deepcopy functions and CRDs from api/ (controller-gen)
generate:
	$(CONTROLLER_GEN) object paths=./api/...
	$(CONTROLLER_GEN) crd paths=./api/v1alpha1/... output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) crd paths=./api/policy/... paths=./api/work/... output:crd:artifacts:config=config/crd/fleet
	rm -f charts/lotse/crds/*.yaml && cp config/crd/bases/*.yaml config/crd/fleet/*.yaml charts/lotse/crds/

## cni-manifests: Cilium's manifest from its upstream Helm chart (hack/render-cilium.sh)
cni-manifests:
	hack/render-cilium.sh

## deps: host packages the tests and the demo need (Debian 12)
deps:
	@hack/install-deps.sh

## releases: the upstream binaries of the default Kubernetes version (cached)
releases: build
	$(LOTSE) release build --node-images $(K8S_VERSION)

## test-releases: the default version and the one the upgrade tests start from
test-releases: build
	$(LOTSE) release build --node-images $(K8S_VERSION) $(UPGRADE_FROM)

## test: everything CI runs: lint, unit tests, end-to-end tests on real binaries
test: deps test-releases lint unit e2e

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(CONTROLLER_GEN) crd paths=./api/v1alpha1/... output:crd:artifacts:config=$$tmp/bases && \
	$(CONTROLLER_GEN) crd paths=./api/policy/... paths=./api/work/... output:crd:artifacts:config=$$tmp/fleet && \
	diff -r $$tmp/bases config/crd/bases >/dev/null && diff -r $$tmp/fleet config/crd/fleet >/dev/null || { echo "config/crd is stale: run make generate"; exit 1; }
	@for f in config/crd/bases/*.yaml config/crd/fleet/*.yaml; do cmp -s $$f charts/lotse/crds/$$(basename $$f) || { echo "charts/lotse/crds is stale: run make generate"; exit 1; }; done
	@test $$(ls charts/lotse/crds | wc -l) -eq $$(ls config/crd/bases config/crd/fleet | grep -c yaml) || { echo "charts/lotse/crds has CRDs config/crd has not: run make generate"; exit 1; }

unit:
	$(GO) test -race -count=1 -timeout 20m ./api/... ./internal/... ./config/... ./hack/...

# The end-to-end tests run one `lotse up` on E2E_STATE_DIR; whatever happens,
# `lotse down` afterwards makes sure no process outlives the run; the output
# ends with each failed test's own lines again (hack/testsummary). Three tests
# at a time (each on its own cluster; four starved each other on two cores),
# longest first: the harness hands out the slots (LOTSE_E2E_PARALLEL,
# test/e2e/schedule_test.go), so go test's own -parallel is set high.
E2E_STATE_DIR ?= /tmp/lotse-e2e-$(shell id -u)
e2e: build
	@$(LOTSE) down --state-dir $(E2E_STATE_DIR) >/dev/null
	@$(GO) build -o bin/testsummary ./hack/testsummary
	@LOTSE_BINARY=$(LOTSE) LOTSE_E2E_STATE_DIR=$(E2E_STATE_DIR) $(GO) test -count=1 -timeout 78m -parallel 64 -json ./test/e2e/... 2>&1 | bin/testsummary; \
	  st=($${PIPESTATUS[@]}); rc=$${st[0]}; [ $$rc -ne 0 ] || rc=$${st[1]}; \
	  $(LOTSE) down --state-dir $(E2E_STATE_DIR) >/dev/null; rm -rf $(E2E_STATE_DIR); exit $$rc

## demo: start lotse, create a cluster, use it with kubectl
demo: deps releases
	@hack/demo.sh

## bench: the figures in docs/benchmarks.md (creation latency, beside kwokctl, idle RSS, nodes, tunnel, addons, load balancers, upgrades, autoscaling, repairs, hibernation, backups, rotations, federation, density, control planes on a seed, one manager with 1,000 clusters)
bench: build releases peers
	@$(LOTSE) down --state-dir $(E2E_STATE_DIR) >/dev/null
	@rc=0; export LOTSE_BINARY=$(LOTSE) LOTSE_E2E_STATE_DIR=$(E2E_STATE_DIR) LOTSE_KWOK_DIR=$(KWOK_DIR); \
	  $(GO) test -count=1 -timeout 60m -run '^$$' -bench 'CreateToAPIServerAvailable' -benchtime 5x ./test/e2e/... || rc=$$?; \
	  $(GO) test -count=1 -timeout 60m -run '^$$' -bench 'VersusKwokctl' -benchtime 3x ./test/e2e/... || rc=$$?; \
	  $(GO) test -count=1 -timeout 60m -run '^$$' -bench 'IdleRSS' -benchtime 1x ./test/e2e/... || rc=$$?; \
	  $(GO) test -count=1 -timeout 60m -run '^$$' -bench 'ClusterWithNodes' -benchtime 5x ./test/e2e/... || rc=$$?; \
	  $(GO) test -count=1 -timeout 60m -run '^$$' -bench 'WebhookThroughTunnel' -benchtime 1x ./test/e2e/... || rc=$$?; \
	  $(GO) test -count=1 -timeout 60m -run '^$$' -bench 'AddonDrift' -benchtime 1x ./test/e2e/... || rc=$$?; \
	  $(GO) test -count=1 -timeout 60m -run '^$$' -bench 'LoadBalancer' -benchtime 1x ./test/e2e/... || rc=$$?; \
	  $(GO) test -count=1 -timeout 60m -run '^$$' -bench 'Upgrade' -benchtime 1x ./test/e2e/... || rc=$$?; \
	  $(GO) test -count=1 -timeout 60m -run '^$$' -bench 'PendingPodToNode' -benchtime 3x ./test/e2e/... || rc=$$?; \
	  $(GO) test -count=1 -timeout 60m -run '^$$' -bench 'MachineRepair' -benchtime 1x ./test/e2e/... || rc=$$?; \
	  $(GO) test -count=1 -timeout 60m -run '^$$' -bench 'Hibernation' -benchtime 3x ./test/e2e/... || rc=$$?; \
	  $(GO) test -count=1 -timeout 60m -run '^$$' -bench 'BackupRestore' -benchtime 3x ./test/e2e/... || rc=$$?; \
	  $(GO) test -count=1 -timeout 60m -run '^$$' -bench 'Rotation' -benchtime 1x ./test/e2e/... || rc=$$?; \
	  $(GO) test -count=1 -timeout 60m -run '^$$' -bench 'FleetPropagation|FleetPullPropagation|FleetDNS' -benchtime 1x ./test/e2e/... || rc=$$?; \
	  $(GO) test -count=1 -timeout 60m -run '^$$' -bench 'Density' -benchtime 1x ./test/e2e/... || rc=$$?; \
	  $(GO) test -count=1 -timeout 60m -run '^$$' -bench 'Seed' -benchtime 1x ./test/e2e/... || rc=$$?; \
	  $(GO) test -count=1 -timeout 40m -run '^$$' -bench 'ManagerClusters' -benchtime 1x ./internal/manager/ || rc=$$?; \
	  $(LOTSE) down --state-dir $(E2E_STATE_DIR) >/dev/null; rm -rf $(E2E_STATE_DIR); exit $$rc

## peers: kwokctl and kwok built from their Go module (hack/peers/go.mod), for make bench's comparison
KWOK_VERSION := $(shell sed -n 's/^require sigs.k8s.io\/kwok \(v[0-9.]*\)$$/\1/p' hack/peers/go.mod)
KWOK_DIR := $(LOTSE_CACHE_DIR)/peers/kwok-$(KWOK_VERSION)
peers:
	@test -n "$(KWOK_VERSION)" || { echo "hack/peers/go.mod: no line 'require sigs.k8s.io/kwok vX.Y.Z'"; exit 1; }
	@test -x $(KWOK_DIR)/kwokctl -a -x $(KWOK_DIR)/kwok || { mkdir -p $(KWOK_DIR) && \
	  CGO_ENABLED=0 $(GO) build -modfile=hack/peers/go.mod -o $(KWOK_DIR)/ sigs.k8s.io/kwok/cmd/kwokctl sigs.k8s.io/kwok/cmd/kwok; }

## demo-down: stop the demo's lotse (SIGINT, like Ctrl-C); data stays
demo-down:
	@state=$${LOTSE_STATE_DIR:-$$HOME/.local/state/lotse}; \
	  if [ -f $$state/lotse.pid ] && kill -INT $$(cat $$state/lotse.pid) 2>/dev/null; then \
	    while kill -0 $$(cat $$state/lotse.pid) 2>/dev/null; do sleep 0.5; done; echo "lotse stopped"; \
	  else $(LOTSE) down --state-dir $$state; fi; rm -f $$state/lotse.pid

clean:
	rm -rf bin
