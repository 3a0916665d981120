#!/usr/bin/env bash
# Installs the host packages Lotse's tests and demo need on Debian 12.
# Idempotent: installs only what is missing.
set -euo pipefail

if ! command -v go >/dev/null 2>&1; then
  echo "Go is required (https://go.dev/doc/install); it builds lotse and the upstream Kubernetes binaries." >&2
  exit 1
fi

# Packages, by a file that proves they are installed. Nodes run Debian's
# containerd, runc and CNI plugins; gcc builds the pause image.
declare -A packages=(
  [/usr/sbin/ip]=iproute2
  [/usr/bin/nsenter]=util-linux
  [/usr/bin/containerd]=containerd
  [/usr/sbin/runc]=runc
  [/usr/lib/cni/bridge]=containernetworking-plugins
  [/usr/sbin/iptables]=iptables
  # The network policy agent's image carries the host's iptables and ipset.
  [/usr/sbin/ipset]=ipset
  [/usr/bin/curl]=curl
  [/usr/bin/gcc]=gcc
  [/usr/lib/x86_64-linux-gnu/libc.a]=libc6-dev
  # The local-path helper pods' image is the static busybox.
  [/bin/busybox]=busybox-static
  # The dashboard's browser test drives Debian's Chromium, headless.
  [/usr/bin/chromium]=chromium
)
missing=()
for file in "${!packages[@]}"; do
  [ -e "$file" ] || missing+=("${packages[$file]}")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
