#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs every system package and Python module
# the tests drive (real tools, no mocks), then `cargo test` over the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(xorriso genisoimage isomd5sum libarchive-tools skopeo docker-registry nginx rpm
  createrepo-c python3-createrepo-c dnf dnf-plugins-core oci-image-tool python3-yaml time gnupg)
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
python3 -c 'import pycdlib, yaml' 2>/dev/null || python3 -m pip install -q pycdlib PyYAML

export PATH="$PATH:/usr/sbin:/sbin"
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast -- --test-threads="${TEST_THREADS:-2}" "$@"
