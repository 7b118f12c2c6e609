# Two commands do everything on a fresh Debian machine with only Python:
#   make run    the admin with its live demo (http://127.0.0.1:8000)
#   make test   lint, types and every test (PostgreSQL at 127.0.0.1:5432 required in CI)
.PHONY: run test test-sqla-latest lint bench venv

PY := .venv/bin/python

venv:
	scripts/bootstrap.sh run

run: venv
	.venv/bin/flowstate-web demo

test:
	scripts/bootstrap.sh test
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	$(PY) -m pytest
	scripts/test_sqlalchemy_latest.sh

# The engine's tests against the newest SQLAlchemy on PyPI (throw-away .venv-sqla-latest).
test-sqla-latest:
	scripts/test_sqlalchemy_latest.sh

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

bench:
	$(PY) bench/bench_transitions.py
