#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs every system package and Python module
# the tests drive (real tools, no mocks), then `cargo test` over the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(xorriso genisoimage isomd5sum libarchive-tools skopeo docker-registry nginx rpm
  createrepo-c python3-createrepo-c dnf dnf-plugins-core oci-image-tool python3-yaml time
  containerd podman python3-jinja2 libzypp1722 zypper-common libaugeas0 busybox-static gnupg
  chromium)
APT_PACKAGES+=(tmux git)  # cli_progress.rs drives a real terminal; cli_ux.rs probes git calls
APT_PACKAGES+=(openssl python3)  # remote_cache.rs: test CA and htpasswd (bcrypt) for docker-registry
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian installs services but policy-rc.d keeps them stopped; tests start their own on 127.0.0.1.
python3 -c 'import pycdlib, yaml, jinja2' 2>/dev/null || python3 -m pip install -q pycdlib PyYAML Jinja2
command -v pyspdxtools >/dev/null || python3 -m pip install -q spdx-tools
# zypper: Debian's dnf-plugins-core declares `Breaks: zypper`, so its .deb is unpacked privately
# (its libraries come from apt above); the deployment test runs $BUILDCHAIN_ZYPPER.
ZYPPER_DIR="${BUILDCHAIN_ZYPPER_DIR:-/opt/buildchain/zypper}"
if [ ! -x "$ZYPPER_DIR/usr/bin/zypper" ]; then
  echo "unpacking zypper into $ZYPPER_DIR"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  dl="$(mktemp -d)"; chmod 755 "$dl"
  (cd "$dl" && apt-get download -qq zypper) || { $SUDO apt-get update -qq && (cd "$dl" && apt-get download -qq zypper); }
  $SUDO mkdir -p "$ZYPPER_DIR"
  $SUDO dpkg -x "$dl"/zypper_*.deb "$ZYPPER_DIR"
  rm -rf "$dl"
fi
export BUILDCHAIN_ZYPPER="$ZYPPER_DIR/usr/bin/zypper"

export PATH="$PATH:/usr/sbin:/sbin"
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast -- --test-threads="${TEST_THREADS:-2}" "$@"
