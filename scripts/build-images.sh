#!/usr/bin/env bash
# Build Noctis' container images with podman, FROM a base the test bed makes from Debian
# packages (no registry is reachable here; the Dockerfiles' `ARG BASE` stays python:3.11-slim
# for everyone else).
#
#   scripts/build-images.sh [--export DIR] [--summary FILE] [IMAGE...]
#   scripts/build-images.sh --print        the assignments below, without building
#   scripts/build-images.sh --no-cache ...  rebuild the images asked for (not the base) without
#                                           podman's layer cache: a cold build, for bench/
#
# IMAGE: any of  scp api worker operator   (the Noctis images, images/*/Dockerfile and
#                                            operator/Dockerfile, context: the repository root)
#                postgres redis s3         (the chart quickstart's backing services, test bed
#                                            only: images/testbed/*/Dockerfile)
#        default: all seven. The base is built first whenever one is asked for.
#
# Names and tags (stable; a tag changes exactly when what goes into its image changes):
#   localhost/noctis-<scp|api|worker|operator>:<version>-<12 hex>   one tag for the four: the
#       package version and a digest of pyproject.toml, src/, .dockerignore, the four
#       Dockerfiles and the base. The chart takes them as image.registry=localhost,
#       image.tag=<that tag>.
#   localhost/noctis-testbed-<postgres|redis|seaweedfs>:<12 hex>   digest of its directory and
#       the base.
#   localhost/noctis-testbed-base:bookworm-<12 hex>   digest of the recipe (build_base below),
#       images/testbed/base/packages and the host's CA bundle (copied in, so that apt and pip
#       work inside builds where TLS is intercepted).
# An image whose tag exists is not built again; otherwise podman's layer cache makes a
# rebuild redo only the layers whose inputs changed (a change under src/: ~15-25 s an image).
# Other tags of an image built here are removed once a day old. To force a rebuild:
# podman rmi <image>.
#
# Output: progress and a table (image, seconds, size) on stderr; on stdout only shell
# assignments, for `eval` or a script to parse:
#   NOCTIS_IMAGE_REGISTRY=localhost
#   NOCTIS_IMAGE_TAG=<version>-<12 hex>
#   NOCTIS_BASE_IMAGE=localhost/noctis-testbed-base:bookworm-<12 hex>
#   NOCTIS_POSTGRES_IMAGE=... NOCTIS_REDIS_IMAGE=... NOCTIS_S3_IMAGE=...
#   NOCTIS_IMAGE_ARCHIVES=DIR                     (with --export)
# --export DIR writes every image asked for as DIR/<name>-<tag>.oci.tar (podman save --format
# oci-archive; an archive already there is kept) for `ctr -n k8s.io images import FILE`,
# which keeps the image's name (checked with Debian's containerd 1.6).
# For the chart: image.registry=localhost image.tag=$NOCTIS_IMAGE_TAG, and with the quickstart
# quickstart.{postgresql,redis,s3}.image=$NOCTIS_{POSTGRES,REDIS,S3}_IMAGE.
# --summary FILE appends one JSON object per image and line:
#   {"image": "scp", "ref": "...", "seconds": 12.3, "bytes": 123456789, "cached": false}
#
# Environment:
#   CONTAINERS_CONF     podman's configuration (default: images/testbed/containers.conf:
#                       runc and explicit ulimits, which these hosts need)
#   NOCTIS_IMAGE_BASE   use this base image instead of building one (e.g.
#                       python:3.11-slim-bookworm where a registry is reachable)
#   NOCTIS_TESTBED_CACHE  where the base's root file system is made (default
#                       ~/.cache/noctis-testbed; removed after import)
#   DEBIAN_MIRROR       debootstrap's mirror (default http://deb.debian.org/debian)
#
# Needs root (debootstrap, podman's default storage) and Debian's podman, runc and debootstrap
# (scripts/bootstrap.sh --test installs them).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-${ROOT}/images/testbed/containers.conf}"
CACHE="${NOCTIS_TESTBED_CACHE:-$HOME/.cache/noctis-testbed}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
REGISTRY=localhost
NOCTIS_IMAGES=(operator scp worker api)
TESTBED_IMAGES=(postgres redis s3)

CLEANUP=()
trap 'rm -rf "${CLEANUP[@]}"' EXIT

log() { echo "build-images: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v start="$1" -v end="$(now)" 'BEGIN { printf "%.1f", end - start }'; }
die() { log "$*"; exit 1; }

digest_files() { # FILE...: one digest of the files' names and contents
  local f
  for f in "$@"; do
    printf '%s\0' "${f}"
    sha256sum <"${f}"
  done | sha256sum | cut -c1-12
}

# ------------------------------------------------------------------------------------------
# The base: debootstrap's minbase of bookworm plus images/testbed/base/packages, imported.

build_base() {
  local ref="$1" rootfs
  rootfs="$(mktemp -d "${CACHE}/base-rootfs.XXXXXX")"
  CLEANUP+=("${rootfs}")
  local packages
  packages="$(grep -v '^#' images/testbed/base/packages | xargs | tr ' ' ,)"
  log "debootstrap bookworm (${packages}) ..."
  nice -n 10 debootstrap --variant=minbase --include="${packages}" bookworm "${rootfs}" \
    "${MIRROR}" >"${CACHE}/base-debootstrap.log" 2>&1 ||
    die "debootstrap failed: see ${CACHE}/base-debootstrap.log"
  # The host's trust store (TLS may be intercepted on the way to the registries); kept by
  # update-ca-certificates too, and given to pip, which otherwise trusts only certifi's.
  install -m 644 "${HOST_CA_BUNDLE}" "${rootfs}/usr/local/share/ca-certificates/host-bundle.crt"
  install -m 644 "${HOST_CA_BUNDLE}" "${rootfs}/etc/ssl/certs/ca-certificates.crt"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"${rootfs}/etc/pip.conf"
  # What a slim image leaves out: package lists and archives, documentation, translations.
  rm -rf "${rootfs}"/var/cache/apt/archives/*.deb "${rootfs}"/var/lib/apt/lists/* \
    "${rootfs}"/usr/share/doc/* "${rootfs}"/usr/share/man/* "${rootfs}"/usr/share/locale/* \
    "${rootfs}"/var/log/*.log "${rootfs}"/var/log/apt/*
  tar -C "${rootfs}" --numeric-owner -c . |
    podman import --quiet \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["python3"]' \
      - "${ref}" >/dev/null
  rm -rf "${rootfs}"
}

compute_base_ref() {
  if [[ -n "${NOCTIS_IMAGE_BASE:-}" ]]; then
    echo "${NOCTIS_IMAGE_BASE}"
    return
  fi
  local key
  key="$({
    declare -f build_base
    cat images/testbed/base/packages
    sha256sum <"${HOST_CA_BUNDLE}"
  } | sha256sum | cut -c1-12)"
  echo "${REGISTRY}/noctis-testbed-base:bookworm-${key}"
}

# ------------------------------------------------------------------------------------------
# Names and tags

compute_noctis_tag() {
  local version digest
  version="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)"
  digest="$({
    echo "${BASE_REF}"
    # Everything the Dockerfiles COPY (.dockerignore admits only these) and the Dockerfiles.
    find pyproject.toml .dockerignore src images/scp images/api images/worker operator \
      -type f ! -name '*.pyc' ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print0 |
      LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-12)"
  echo "${version}-${digest}"
}

testbed_dir() { case "$1" in s3) echo images/testbed/seaweedfs ;; *) echo "images/testbed/$1" ;; esac; }
testbed_name() { case "$1" in s3) echo seaweedfs ;; *) echo "$1" ;; esac; }

image_ref() { # IMAGE: its full reference
  case "$1" in
    scp | api | worker | operator) echo "${REGISTRY}/noctis-$1:${NOCTIS_TAG}" ;;
    postgres | redis | s3)
      local dir key
      dir="$(testbed_dir "$1")"
      key="$({
        echo "${BASE_REF}"
        find "${dir}" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
      } | sha256sum | cut -c1-12)"
      echo "${REGISTRY}/noctis-testbed-$(testbed_name "$1"):${key}"
      ;;
    *) die "unknown image: $1 (scp api worker operator postgres redis s3)" ;;
  esac
}

dockerfile_and_context() { # IMAGE: "<Dockerfile> <context>"
  case "$1" in
    operator) echo "operator/Dockerfile ." ;;
    scp | api | worker) echo "images/$1/Dockerfile ." ;;
    *) echo "$(testbed_dir "$1")/Dockerfile $(testbed_dir "$1")" ;;
  esac
}

# ------------------------------------------------------------------------------------------
# Building

declare -A SECONDS_TAKEN=() WAS_CACHED=()

ensure_base() {
  local ref="${BASE_REF}"
  if podman image exists "${ref}"; then
    WAS_CACHED[base]=true SECONDS_TAKEN[base]=0
    return
  fi
  if [[ -n "${NOCTIS_IMAGE_BASE:-}" ]]; then # podman build pulls it
    WAS_CACHED[base]=true SECONDS_TAKEN[base]=0
    return
  fi
  command -v debootstrap >/dev/null || die "debootstrap is missing (scripts/bootstrap.sh --test)"
  mkdir -p "${CACHE}"
  local start
  start="$(now)"
  build_base "${ref}"
  WAS_CACHED[base]=false SECONDS_TAKEN[base]="$(since "${start}")"
  log "base ${ref} built in ${SECONDS_TAKEN[base]} s"
}

build_image() {
  local image="$1" ref dockerfile context
  ref="$(image_ref "${image}")"
  if [[ ${NO_CACHE} == 0 ]] && podman image exists "${ref}"; then
    WAS_CACHED[${image}]=true SECONDS_TAKEN[${image}]=0
    log "${image}: ${ref} (cached)"
    return
  fi
  local cache_flag=()
  [[ ${NO_CACHE} == 0 ]] || cache_flag=(--no-cache)
  read -r dockerfile context <<<"$(dockerfile_and_context "${image}")"
  log "${image}: building ${ref} ..."
  local start buildlog="${CACHE}/build-${image}.log"
  start="$(now)"
  mkdir -p "${CACHE}"
  if ! nice -n 10 podman build --layers "${cache_flag[@]}" --build-arg "BASE=${BASE_REF}" \
    --label "org.opencontainers.image.version=${ref##*:}" \
    -f "${dockerfile}" -t "${ref}" "${context}" >"${buildlog}" 2>&1; then
    tail -n 30 "${buildlog}" >&2
    die "${image}: podman build failed (whole log: ${buildlog})"
  fi
  WAS_CACHED[${image}]=false SECONDS_TAKEN[${image}]="$(since "${start}")"
  log "${image}: built in ${SECONDS_TAKEN[${image}]} s"
}

remove_stale_tags() { # IMAGE: other tags of it made over a day ago (their layers go with them)
  # Not younger ones: other work trees on this machine build other tags of the same images.
  local ref repo old
  ref="$(image_ref "$1")"
  repo="${ref%:*}"
  while read -r old; do
    [[ "${old}" == "${ref}" ]] || podman rmi "${old}" >/dev/null 2>&1 || true
  done < <(podman images --filter "reference=${repo}" --filter until=24h \
    --format '{{.Repository}}:{{.Tag}}')
}

image_bytes() { podman image inspect --format '{{.Size}}' "$1" 2>/dev/null || echo 0; }

export_image() { # IMAGE DIR
  local ref name archive
  ref="$(image_ref "$1")"
  name="${ref#"${REGISTRY}"/}"
  archive="$2/${name%%:*}-${ref##*:}.oci.tar"
  [[ -s "${archive}" ]] && return
  podman save --quiet --format oci-archive -o "${archive}.partial" "${ref}"
  mv "${archive}.partial" "${archive}"
  log "exported ${archive}"
}

assignments() {
  echo "NOCTIS_IMAGE_REGISTRY=${REGISTRY}"
  echo "NOCTIS_IMAGE_TAG=${NOCTIS_TAG}"
  echo "NOCTIS_BASE_IMAGE=${BASE_REF}"
  echo "NOCTIS_POSTGRES_IMAGE=$(image_ref postgres)"
  echo "NOCTIS_REDIS_IMAGE=$(image_ref redis)"
  echo "NOCTIS_S3_IMAGE=$(image_ref s3)"
}

BASE_REF="" NOCTIS_TAG="" NO_CACHE=0

main() {
  BASE_REF="$(compute_base_ref)"
  NOCTIS_TAG="$(compute_noctis_tag)"
  local export_dir="" summary="" images=() print_only=0
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --export) export_dir="${2:?--export needs a directory}"; shift 2 ;;
      --summary) summary="${2:?--summary needs a file}"; shift 2 ;;
      --print) print_only=1; shift ;;
      --no-cache) NO_CACHE=1; shift ;;
      -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
      -*) die "unknown option: $1 (see --help)" ;;
      *) image_ref "$1" >/dev/null; images+=("$1"); shift ;;
    esac
  done
  [[ ${#images[@]} -gt 0 ]] || images=("${NOCTIS_IMAGES[@]}" "${TESTBED_IMAGES[@]}")
  if [[ ${print_only} == 1 ]]; then
    assignments
    return
  fi
  command -v podman >/dev/null || die "podman is missing (scripts/bootstrap.sh --test)"
  local total_start
  total_start="$(now)"
  ensure_base
  local image
  for image in "${images[@]}"; do
    build_image "${image}"
    remove_stale_tags "${image}"
  done
  {
    printf '%-10s %-62s %8s %9s\n' image reference seconds MB
    printf '%-10s %-62s %8s %9s\n' base "${BASE_REF}" "${SECONDS_TAKEN[base]}" \
      "$(($(image_bytes "${BASE_REF}") / 1000000))"
    for image in "${images[@]}"; do
      printf '%-10s %-62s %8s %9s\n' "${image}" "$(image_ref "${image}")" \
        "${SECONDS_TAKEN[${image}]}$([[ ${WAS_CACHED[${image}]} == true ]] && echo ' (cached)')" \
        "$(($(image_bytes "$(image_ref "${image}")") / 1000000))"
    done
  } >&2
  if [[ -n "${summary}" ]]; then
    for image in base "${images[@]}"; do
      local ref
      [[ ${image} == base ]] && ref="${BASE_REF}" || ref="$(image_ref "${image}")"
      printf '{"image": "%s", "ref": "%s", "seconds": %s, "bytes": %s, "cached": %s}\n' \
        "${image}" "${ref}" "${SECONDS_TAKEN[${image}]}" "$(image_bytes "${ref}")" \
        "${WAS_CACHED[${image}]}"
    done >>"${summary}"
  fi
  if [[ -n "${export_dir}" ]]; then
    mkdir -p "${export_dir}"
    for image in "${images[@]}"; do
      export_image "${image}" "${export_dir}"
    done
  fi
  log "done in $(since "${total_start}") s"
  assignments
  [[ -z "${export_dir}" ]] || echo "NOCTIS_IMAGE_ARCHIVES=$(cd "${export_dir}" && pwd)"
}

main "$@"
