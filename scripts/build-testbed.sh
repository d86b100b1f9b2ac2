#!/usr/bin/env bash
# Build the Kubernetes test bed through the Go module proxy and cache it outside the repo:
#   kube-apiserver, kube-controller-manager, kubectl,
#   kube-scheduler, kubelet, kube-proxy               (one k8s.io/kubernetes release)
#   etcd                                              (go.etcd.io/etcd/server/v3)
#   helm                                              (helm.sh/helm/v3)
#   metrics-server                                    (sigs.k8s.io/metrics-server; the HPA's metrics)
#   coredns                                           (github.com/coredns/coredns; cluster DNS)
#   crictl                                            (sigs.k8s.io/cri-tools; the node's pods)
# `build-testbed.sh minio` builds only MinIO (github.com/minio/minio), the benchmark's S3 server.
# Layout: ${NOCTIS_TESTBED_CACHE:-$HOME/.cache/noctis-testbed}/<name>-<version>/bin/<binary>
# A binary that is already there is not rebuilt. Versions: scripts/testbed-versions.env.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=testbed-versions.env
source "${script_dir}/testbed-versions.env"

CACHE="${NOCTIS_TESTBED_CACHE:-$HOME/.cache/noctis-testbed}"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
NICE=(nice -n 10)
ORIG_GOFLAGS="${GOFLAGS:-}"
# The wrapper modules start without a go.sum: let the go command complete it.
export GOFLAGS="${ORIG_GOFLAGS:+${ORIG_GOFLAGS} }-mod=mod"
# One binary at a time, at most two compiles at once: the machines have 2 cores.
export GOMAXPROCS="${GOMAXPROCS:-2}"

log() { echo "build-testbed: $*" >&2; }

workdir="$(mktemp -d)"
trap 'rm -rf "${workdir}"' EXIT

# run_timed LABEL CMD...: run CMD and report how long it took.
run_timed() {
  local label="$1"; shift
  local start=${SECONDS}
  log "building ${label} ..."
  "$@"
  log "built ${label} in $((SECONDS - start)) s"
}

# in_dir DIR CMD...: run CMD in DIR.
in_dir() { (cd "$1" && shift && "$@"); }

# go_tidy_and_build OUT: resolve the wrapper module's requirements, then build its main package.
go_tidy_and_build() {
  "${NICE[@]}" "${GO}" mod tidy
  "${NICE[@]}" "${GO}" build -trimpath -ldflags "-s -w" -o "$1" .
}

# staging_replaces GOMOD VERSION: one "replace" line per k8s.io staging module of the release,
# read from the release's own go.mod ("k8s.io/x => ./staging/src/k8s.io/x").
staging_replaces() {
  local gomod="$1" staging_version="$2"
  awk -v v="${staging_version}" '
    /=> *\.\/staging\// {
      sub(/^[ \t]*replace[ \t]+/, "")
      print "replace " $1 " => " $1 " " v
    }' "${gomod}"
}

kubernetes_wrapper() {
  local version="$1" dir="$2"
  local minor patch gomod
  IFS=. read -r _ minor patch <<<"${version#v}"
  gomod="$("${GO}" mod download -json "k8s.io/kubernetes@${version}" |
    awk -F'"' '$2 == "GoMod" { print $4 }')"
  [[ -f "${gomod}" ]] || { log "cannot read go.mod of k8s.io/kubernetes@${version}"; exit 1; }
  {
    echo "module noctis.local/testbed/kubernetes"
    echo
    grep -E '^(go|godebug) ' "${gomod}"
    echo
    echo "require k8s.io/kubernetes ${version}"
    echo
    staging_replaces "${gomod}" "v0.${minor}.${patch}"
  } >"${dir}/go.mod"
  log "wrapper go.mod for k8s.io/kubernetes@${version}: $(grep -c '^replace' "${dir}/go.mod") staging replaces"
}

build_kubernetes() {
  local version="${KUBERNETES_VERSION}"
  local bindir="${CACHE}/kubernetes-${version}/bin"
  local missing=()
  for cmd in kube-apiserver kube-controller-manager kubectl kube-scheduler kubelet kube-proxy; do
    [[ -x "${bindir}/${cmd}" ]] || missing+=("${cmd}")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "kubernetes ${version}: cached in ${bindir}"
    return
  fi
  local dir="${workdir}/kubernetes" major minor
  mkdir -p "${dir}" "${bindir}"
  kubernetes_wrapper "${version}" "${dir}"
  IFS=. read -r major minor _ <<<"${version#v}"
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${pkg}.gitVersion=${version} -X ${pkg}.gitMajor=${major}"
    ldflags+=" -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean"
  done
  for cmd in "${missing[@]}"; do
    run_timed "${cmd} ${version}" in_dir "${dir}" \
      "${NICE[@]}" "${GO}" build -trimpath -ldflags "${ldflags}" \
      -o "${bindir}/.${cmd}.partial.$$" "k8s.io/kubernetes/cmd/${cmd}"
    mv "${bindir}/.${cmd}.partial.$$" "${bindir}/${cmd}"
  done
}

build_etcd() {
  local version="${ETCD_VERSION}"
  local bindir="${CACHE}/etcd-${version}/bin"
  cached "etcd" "${version}" && return
  local dir="${workdir}/etcd"
  mkdir -p "${dir}" "${bindir}"
  cat >"${dir}/go.mod" <<GOMOD
module noctis.local/testbed/etcd

go 1.24.0

require go.etcd.io/etcd/server/v3 ${version}
GOMOD
  cat >"${dir}/main.go" <<'GOMAIN'
// The etcd server, built from go.etcd.io/etcd/server/v3 for the Noctis test bed.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GOMAIN
  run_timed "etcd ${version}" in_dir "${dir}" go_tidy_and_build "${bindir}/.etcd.partial.$$"
  mv "${bindir}/.etcd.partial.$$" "${bindir}/etcd"
}

build_helm() {
  local version="${HELM_VERSION}"
  local bindir="${CACHE}/helm-${version}/bin"
  cached "helm" "${version}" && return
  mkdir -p "${bindir}"
  # Like helm's Makefile: the default Kubernetes version of `helm template` follows client-go.
  local gomod client_go k8s_minor
  gomod="$("${GO}" mod download -json "helm.sh/helm/v3@${version}" |
    awk -F'"' '$2 == "GoMod" { print $4 }')"
  client_go="$(awk '$1 == "k8s.io/client-go" { print $2 }' "${gomod}")"
  IFS=. read -r _ k8s_minor _ <<<"${client_go#v}"
  local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${version}"
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ldflags+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${k8s_minor}"
  done
  go_install "helm ${version}" "${bindir}" "${ldflags}" "helm.sh/helm/v3/cmd/helm@${version}"
}

build_minio() {
  local version="${MINIO_VERSION}"
  local bindir="${CACHE}/minio-${version}/bin"
  cached "minio" "${version}" && return
  mkdir -p "${bindir}"
  go_install "minio ${version}" "${bindir}" "-s -w" "github.com/minio/minio@${version}"
}

build_metrics_server() {
  local version="${METRICS_SERVER_VERSION}"
  local bindir="${CACHE}/metrics-server-${version}/bin"
  cached "metrics-server" "${version}" && return
  mkdir -p "${bindir}"
  # Like its Makefile: the version is client-go's (metrics-server's /version and User-Agent).
  local ldflags="-s -w -X k8s.io/client-go/pkg/version.gitVersion=${version}"
  go_install "metrics-server ${version}" "${bindir}" "${ldflags}" \
    "sigs.k8s.io/metrics-server/cmd/metrics-server@${version}"
}

build_coredns() {
  local version="${COREDNS_VERSION}"
  local bindir="${CACHE}/coredns-${version}/bin"
  cached "coredns" "${version}" && return
  mkdir -p "${bindir}"
  go_install "coredns ${version}" "${bindir}" "-s -w" "github.com/coredns/coredns@${version}"
}

build_crictl() {
  local version="${CRICTL_VERSION}"
  local bindir="${CACHE}/crictl-${version}/bin"
  cached "crictl" "${version}" && return
  mkdir -p "${bindir}"
  go_install "crictl ${version}" "${bindir}" \
    "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${version}" \
    "sigs.k8s.io/cri-tools/cmd/crictl@${version}"
}

# cached NAME VERSION: true, and says so, when NAME of VERSION is built already.
cached() {
  local bindir="${CACHE}/$1-$2/bin"
  [[ -x "${bindir}/$1" ]] || return 1
  log "$1 $2: cached in ${bindir}"
}

# go_install LABEL BINDIR LDFLAGS PKG@VERSION: build a command into BINDIR.
go_install() {
  # go install pkg@version builds outside any module, where -mod=mod is rejected.
  run_timed "$1" env GOFLAGS="${ORIG_GOFLAGS}" GOBIN="$2" \
    "${NICE[@]}" "${GO}" install -trimpath -ldflags "$3" "$4"
}

main() {
  local total_start=${SECONDS}
  if [[ "${1:-}" == "minio" ]]; then
    mkdir -p "${CACHE}"
    build_minio
    log "done in $((SECONDS - total_start)) s"
    echo "${CACHE}/minio-${MINIO_VERSION}/bin"
    return
  fi
  log "cache: ${CACHE}"
  log "using $("${GO}" version) (etcd ${ETCD_VERSION} and helm ${HELM_VERSION} need go >= 1.26)"
  mkdir -p "${CACHE}"
  build_etcd
  build_helm
  build_kubernetes
  build_metrics_server
  build_coredns
  build_crictl
  log "done in $((SECONDS - total_start)) s"
  echo "${CACHE}/kubernetes-${KUBERNETES_VERSION}/bin"
  echo "${CACHE}/etcd-${ETCD_VERSION}/bin"
  echo "${CACHE}/helm-${HELM_VERSION}/bin"
  echo "${CACHE}/metrics-server-${METRICS_SERVER_VERSION}/bin"
  echo "${CACHE}/coredns-${COREDNS_VERSION}/bin"
  echo "${CACHE}/crictl-${CRICTL_VERSION}/bin"
}

main "$@"
