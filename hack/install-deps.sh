#!/usr/bin/env bash
# Installs the host packages Lotse's tests and demo need on Debian 12.
# Idempotent: installs only what is missing.
set -euo pipefail

if ! command -v go >/dev/null 2>&1; then
  echo "Go is required (https://go.dev/doc/install); it builds lotse and the upstream Kubernetes binaries." >&2
  exit 1
fi

# Packages, by the command that proves they are installed.
declare -A packages=(
  [ip]=iproute2
)
missing=()
for cmd in "${!packages[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${packages[$cmd]}")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
