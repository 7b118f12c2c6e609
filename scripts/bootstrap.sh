#!/usr/bin/env bash
# Set up everything a fresh Debian machine with only Python needs, for `run` or `test`.
#   scripts/bootstrap.sh run    -> .venv with the app, demo and PostgreSQL driver; Graphviz
#   scripts/bootstrap.sh test   -> the above plus dev tools; Graphviz and Chromium
# System packages are installed with apt-get when running as root; otherwise it stops with
# the one line to run. Idempotent: a second call only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"
PY="${PYTHON:-python3}"

need_pkgs=()
command -v dot >/dev/null 2>&1 || need_pkgs+=(graphviz)
if [ "$mode" = test ] && [ ! -x /usr/bin/chromium ]; then need_pkgs+=(chromium); fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing ${need_pkgs[*]} with apt-get" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "bootstrap: missing ${need_pkgs[*]}; run: sudo apt-get install -y ${need_pkgs[*]}" >&2
    exit 1
  fi
fi

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "bootstrap: Python >= 3.11 is required (found $("$PY" --version 2>&1))" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
extras="demo,postgres,redis"
[ "$mode" = test ] && extras="dev"
stamp=".venv/.installed-$mode-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]" >&2
  touch "$stamp"
fi
