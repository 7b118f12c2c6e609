#!/usr/bin/env bash
# The engine's tests against the newest SQLAlchemy release on PyPI, in a throw-away venv
# (.venv-sqla-latest), so a new SQLAlchemy that breaks the engine (its fast path above all)
# fails CI before a user meets it. Run by `make test`; engine tests only, no browser.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV=.venv-sqla-latest
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "${pip[@]}" -e ".[postgres]" "pytest>=8.0" >&2
  touch "$stamp"
fi
# Every run: whatever SQLAlchemy release is newest now (pyproject.toml has no upper pin).
"${pip[@]}" --upgrade SQLAlchemy >&2
echo "sqlalchemy-latest: SQLAlchemy $("$VENV/bin/python" -c 'import sqlalchemy; print(sqlalchemy.__version__)')" >&2
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
  tests/test_fastpath.py tests/test_get.py tests/test_transitions.py tests/test_transactions.py \
  tests/test_concurrency.py tests/test_counters.py tests/test_lifecycle.py \
  tests/test_artefacts.py tests/test_props.py "$@"
