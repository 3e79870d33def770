#!/usr/bin/env bash
# phigate: one entry point for running, testing and operating the gateway (./run.sh help).
# Everything it needs (venvs, the Chroma server, the OpenID provider, Debian packages) it installs
# itself under .phigate/ (git-ignored), so a fresh machine needs only this repository.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${PHIGATE_HOME:-$ROOT/.phigate}"
VENV="$STATE/venv"
CHROMA_VENV="$STATE/chroma-venv"
IDP_DIR="$STATE/idp"
CHROMA_VERSION="${PHIGATE_CHROMA_VERSION:-1.5.9}"
export PHIGATE_ROOT="$ROOT" PHIGATE_HOME="$STATE"

say() { printf '[phigate] %s\n' "$*" >&2; }
die() { printf '[phigate] error: %s\n' "$*" >&2; exit 1; }

# mitmproxy 12 needs Python >= 3.12; an older python3 would quietly resolve mitmproxy 11.
find_python() {
  local candidates=()
  [[ -n "${PHIGATE_PYTHON:-}" ]] && candidates+=("$PHIGATE_PYTHON")
  candidates+=(python3.13 python3.12)
  local d
  for d in "$HOME"/.pyenv/versions/3.1[2-9]* /usr/local/bin /usr/bin; do
    [[ -x "$d/bin/python3" ]] && candidates+=("$d/bin/python3")
    [[ -x "$d/python3" ]] && candidates+=("$d/python3")
  done
  candidates+=(python3)
  local c
  for c in "${candidates[@]}"; do
    if command -v "$c" >/dev/null 2>&1 &&
      "$c" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
      command -v "$c"
      return 0
    fi
  done
  die "no Python >= 3.12 found (mitmproxy 12 needs it). Install one, e.g. 'apt-get install python3.12 python3.12-venv' or 'pyenv install 3.12', or point PHIGATE_PYTHON at it."
}

stamp_ok() { [[ -f "$1" && "$(cat "$1")" == "$2" ]]; }

ensure_venv() {
  local want
  want="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
  if [[ -x "$VENV/bin/python" ]] && stamp_ok "$VENV/.phigate-stamp" "$want"; then return 0; fi
  local py
  py="$(find_python)"
  say "creating the gateway venv with $py ($("$py" --version))"
  [[ -x "$VENV/bin/python" ]] || "$py" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q -e "$ROOT[test]"
  echo "$want" >"$VENV/.phigate-stamp"
}

# A venv of its own for a program whose pins clash with mitmproxy's, (re)made when its pins change.
#   ensure_side_venv WHAT DIR EXECUTABLE PINS...
ensure_side_venv() {
  local what="$1" dir="$2" exe="$3"
  shift 3
  if [[ -x "$dir/bin/$exe" ]] && stamp_ok "$dir/.phigate-stamp" "$*"; then return 0; fi
  local py
  py="$(find_python)"
  say "installing $what in its own venv"
  [[ -x "$dir/bin/python" ]] || "$py" -m venv "$dir"
  "$dir/bin/python" -m pip install -q "$@"
  echo "$*" >"$dir/.phigate-stamp"
}

# chromadb's pins (bcrypt, ...) break mitmproxy in a shared venv: the server gets its own.
ensure_chroma() {
  ensure_side_venv "the Chroma server (chromadb $CHROMA_VERSION)" "$CHROMA_VENV" chroma "chromadb==$CHROMA_VERSION"
}

# Backend clients and the Milvus server: the official clients' pins (grpcio,
# protobuf, httpx, pydantic) clash with mitmproxy's, and milvus ships its own binaries: own venvs.
CLIENTS_VENV="$STATE/clients-venv"
MILVUS_VENV="$STATE/milvus-venv"
CLIENTS_PINS="qdrant-client==1.20.0 pinecone==10.2.0 opensearch-py==3.2.0 requests"
MILVUS_VERSION="${PHIGATE_MILVUS_VERSION:-2.3.5}"

ensure_clients() {
  # shellcheck disable=SC2086 # the pins are a word list
  ensure_side_venv "the backend clients (qdrant-client, pinecone, opensearch-py)" "$CLIENTS_VENV" python $CLIENTS_PINS
}

ensure_milvus() {
  ensure_side_venv "the Milvus standalone server (pip milvus $MILVUS_VERSION)" "$MILVUS_VENV" milvus-server \
    "milvus==$MILVUS_VERSION"
}

ensure_idp() {
  if [[ -d "$IDP_DIR/node_modules/oidc-provider" ]]; then return 0; fi
  command -v npm >/dev/null || die "npm is needed for the local OpenID provider: apt-get install nodejs npm"
  say "installing the local OpenID provider (npm oidc-provider@9)"
  mkdir -p "$IDP_DIR"
  cp "$ROOT/tests/support/idp/package.json" "$IDP_DIR/package.json"
  (cd "$IDP_DIR" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
}

# Debian packages: Chromium (report and console checks), poppler (pdftoppm, pdftotext), HAProxy
# (workers), wrk (benchmarks' load generator).
ensure_debs() {
  local missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v pdftoppm >/dev/null || missing+=(poppler-utils)
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v wrk >/dev/null || missing+=(wrk)
  fc-list 2>/dev/null | grep -qi dejavu || missing+=(fonts-dejavu-core)
  ((${#missing[@]} == 0)) && return 0
  command -v apt-get >/dev/null || die "install these packages: ${missing[*]}"
  say "installing Debian packages: ${missing[*]}"
  local sudo=""
  [[ "$(id -u)" == 0 ]] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

setup_all() {
  ensure_venv
  ensure_chroma
  ensure_idp
  ensure_debs
  ensure_clients
  ensure_milvus
}

py() { "$VENV/bin/python" "$@"; }

export PHIGATE_CHROMA_BIN="$CHROMA_VENV/bin/chroma"
export PHIGATE_CHROMA_PYTHON="$CHROMA_VENV/bin/python"
export PHIGATE_IDP_DIR="$IDP_DIR"
export PHIGATE_MILVUS_BIN="$MILVUS_VENV/bin/milvus-server"

cmd="${1:-help}"
shift || true
case "$cmd" in
  setup)
    setup_all
    say "ready: $VENV, $CHROMA_VENV, $IDP_DIR"
    ;;
  test)
    # The whole suite: lint, types, unit and integration tests against real servers.
    setup_all
    cd "$ROOT"
    py -m ruff check addons reports tests
    py -m mypy
    # Every test must run here: a skip (a tool the setup installs is missing) fails the run.
    PHIGATE_NO_SKIPS=1 py -m pytest -q -p no:cacheprovider "$@"
    ;;
  certs)
    ensure_venv
    py -m addons.cli.certs --dir "$ROOT/certs" "$@"
    ;;
  keys)
    ensure_venv
    cd "$ROOT"
    py -m addons.cli.keys "$@"
    ;;
  gateway)
    ensure_venv
    cd "$ROOT"
    exec "$VENV/bin/python" -m addons.runtime.launch "$@"
    ;;
  demo)
    setup_all
    cd "$ROOT"
    exec "$VENV/bin/python" -m tests.support.demo "$@"
    ;;
  verify | replay | export | approvals | rules)
    ensure_venv
    cd "$ROOT"
    exec "$VENV/bin/python" -m "addons.cli.$cmd" "$@"
    ;;
  report)
    ensure_venv
    cd "$ROOT"
    exec "$VENV/bin/python" -m reports.cli "$@"
    ;;
  help | -h | --help)
    cat <<'USAGE'
Usage: ./run.sh COMMAND [ARGS...]   (./run.sh COMMAND --help for a command's own flags)

  demo       start Chroma, the OpenID provider and the gateway, and play a scripted session
  test       ruff, mypy and the whole test suite against real servers (what CI runs)
  setup      install everything the other commands need under .phigate/
  gateway    run the gateway in front of a backend (flags, env, --set; --workers N)
  certs      make a local development CA and server certificate in certs/
  keys       make development secrets: token keys, recording key, audit signing key
  approvals  list, approve, deny and grant held requests as an approver (admin API)
  rules      apply a new rule file, its author and reason recorded in the ledger (token)
  verify     check the audit ledger's hashes, tree and signed checkpoints
  replay     print (or re-send) one recorded session, decrypted
  export     export audit records as JSON lines, CSV or Parquet
  report     write, sign and verify HIPAA evidence packets; per-patient disclosures
USAGE
    ;;
  *)
    die "unknown command '$cmd' (try ./run.sh help)"
    ;;
esac
