#!/usr/bin/env bash
# ./run.sh container-test: make the Debian base image, then build and run deploy/compose.yaml with
# podman-compose under tests/container (image user, read-only root, volumes, traffic, metrics, logs,
# the audit volume's ledger verified). Slow (image builds): not part of ./run.sh test.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE_IMAGE="${PHIGATE_BASE_IMAGE:-localhost/phigate-base:trixie}"
# Debian trixie: its python3 is 3.13 (mitmproxy 12 needs >= 3.12); passwd for the images' users.
BASE_SUITE="trixie"
BASE_PACKAGES="python3,python3-venv,ca-certificates,passwd"
say() { printf '[phigate] container-test: %s\n' "$*" >&2; }

# Podman settings this needs on hosts like the ones it is tested on: runc, since crun refuses a
# hybrid cgroup v1/v2 hierarchy, and ulimits within the host's hard limits (podman's defaults
# for root, 1048576 open files, fail with "setrlimit: Operation not permitted" where the hard
# limit is lower). Both are harmless elsewhere.
conf="$(mktemp --suffix=.conf)"
trap 'rm -f "$conf"' EXIT
cat >"$conf" <<CONF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=4096:4096"]
[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF="$conf" BUILDAH_RUNTIME=runc  # (image builds read the runtime from here)

base_image() {
  local label
  label="$(podman image inspect --format '{{index .Config.Labels "phigate.packages"}}' "$BASE_IMAGE" 2>/dev/null || true)"
  if [[ "$label" == "$BASE_SUITE:$BASE_PACKAGES" ]]; then return 0; fi
  say "making $BASE_IMAGE from Debian $BASE_SUITE packages with mmdebstrap ($BASE_PACKAGES)"
  mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" "$BASE_SUITE" - http://deb.debian.org/debian |
    podman import --change "LABEL phigate.packages=$BASE_SUITE:$BASE_PACKAGES" --change 'CMD ["/bin/bash"]' \
      - "$BASE_IMAGE" >/dev/null
}

[[ -d "$ROOT/.phigate/idp/node_modules/oidc-provider" ]] || { say "run ./run.sh setup first (OpenID provider)"; exit 1; }
base_image
if [[ "${1:-}" == base ]]; then exit 0; fi
cd "$ROOT"
PHIGATE_CONTAINER_TEST=1 nice "$ROOT/.phigate/venv/bin/python" -m pytest -q -p no:cacheprovider tests/container "$@"
