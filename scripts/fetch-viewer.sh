#!/usr/bin/env bash
# Fetch the OHIF viewer (@ohif/app, pinned in src/noctis/api/viewer.py) from the npm registry
# with npm, verify its sha512 against the registry and the pinned value, and extract its
# dist/ into a per-version cache outside the repository (~/.cache/noctis/viewer/ohif-<ver>,
# or --dest DIR; point NOCTIS_VIEWER_DIR at a non-default DIR). Does nothing when the cache
# already holds that build. Extra arguments: --dest DIR, --keep-ort, --force.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  echo "installing Debian's npm (to fetch the viewer from the npm registry)"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends npm
fi

python=.venv/bin/python
[ -x "$python" ] || python=${PYTHON:-python3}
exec "$python" -m noctis.api.viewer_fetch "$@"
