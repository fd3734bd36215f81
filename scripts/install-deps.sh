#!/usr/bin/env bash
# Installs the Debian packages pagewise needs to build, test and run its demo.
# Idempotent: installs only what is missing, so a warm machine pays one dpkg query.
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config git
  clang libclang-rt-14-dev clang-format
  libgtest-dev libgmock-dev libbenchmark-dev
  libzstd-dev liblz4-dev libxxhash-dev nlohmann-json3-dev libcli11-dev
  python3
  # CRIU 4.x's runtime libraries (its binary comes from the machine or
  # PAGEWISE_CRIU), and ip(8) for the network-namespace migration tests.
  libprotobuf-c1 libnl-3-200 libnet1 iproute2
  # remote images: HTTP(S) client, SigV4; a real S3 server (Ceph RADOS
  # Gateway, scripts/rgw.sh) for the tests and `pagewise bench remote`
  libcurl4-openssl-dev libssl-dev curl ceph-mon ceph-osd radosgw ceph-common
)
# The Rust crate's tests (bindings/rust, run by tests/install_test.sh) need
# cargo and rustc. A machine with a rustup toolchain on PATH has them; a plain
# Debian machine gets Debian's (bookworm: rustc 1.63, which the crate supports).
if ! command -v cargo >/dev/null || ! command -v rustc >/dev/null; then
  PKGS+=(cargo rustc)
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
