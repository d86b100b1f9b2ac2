#!/usr/bin/env bash
# Set up everything Noctis needs on a fresh Debian 12 machine: system packages (tests and
# benchmarks use real servers and peers) and a virtualenv at .venv with the package.
#   scripts/bootstrap.sh            runtime only (what `scripts/serve` needs)
#   scripts/bootstrap.sh --test     plus test peers: PostgreSQL, Redis, dcmtk, Chromium, and
#                                   podman, runc and debootstrap for the images
#   scripts/bootstrap.sh --bench    plus Orthanc and MinIO (built once, cached) for the benchmarks
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0 want_bench=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    --bench) want_test=1 want_bench=1 ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done

debs=()
if [ "$want_test" = 1 ]; then
  debs+=(dcmtk postgresql redis-server chromium chromium-driver fonts-dejavu-core strace)
  # pdftotext reads the report PDFs the tests render.
  debs+=(poppler-utils)
  # The container images (scripts/build-images.sh): podman over runc, a base from debootstrap.
  debs+=(podman runc debootstrap)
  # The one-node cluster's runtime and network (scripts/cluster): containerd, CNI, kube-proxy's.
  debs+=(containerd containernetworking-plugins iptables conntrack)
fi
if [ "$want_bench" = 1 ]; then
  debs+=(orthanc orthanc-dicomweb orthanc-postgresql)
fi
if [ "$want_test" = 1 ]; then
  # The one-node cluster's own images (tests/support/cluster/{pause,hello}): static C programs.
  debs+=(gcc libc6-dev)
fi

missing=()
for deb in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q "install ok installed" || missing+=("$deb")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
  # Debian starts the packaged services; the tests (and scripts/cluster) run their own.
  for svc in postgresql redis-server orthanc containerd; do
    $sudo_cmd service "$svc" stop >/dev/null 2>&1 || true
  done
fi

python=${PYTHON:-python3}
"$python" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
extras="all"
[ "$want_test" = 1 ] && extras="test"
stamp=".venv/.installed-$extras-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$extras]"
  touch "$stamp"
fi

if [ "$want_test" = 1 ]; then
  # Every pynetdicom release the pin allows, each on its own, for the contract test of
  # noctis.scp.fast.compat (tests/scp/test_compat_contract.py); cached outside the repo.
  for version in 3.0.0 3.0.1 3.0.3 3.0.4; do
    target="$HOME/.cache/noctis-testbed/pynetdicom-$version"
    [ -f "$target/pynetdicom/__init__.py" ] ||
      .venv/bin/python -m pip install -q --no-deps --target "$target" "pynetdicom==$version"
  done
fi

if [ "$want_bench" = 1 ]; then
  # The benchmark's S3 server (bench/minio.py); cached outside the repo, built once.
  scripts/build-testbed.sh minio >/dev/null
fi
