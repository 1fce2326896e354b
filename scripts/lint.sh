#!/usr/bin/env bash
# The style and type checks that .ci/run runs before the tests (pre-commit runs the same hooks locally):
# ruff's lint rules, ruff's formatting, and mypy against a baseline that may only shrink (scripts/typecheck.py).
# scripts/fix-style.sh applies every fix that can be automated.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
status=0
"$PY" -m ruff check --no-fix . || status=1
if ! out=$("$PY" -m ruff format --check . 2>&1); then  # the list of files can be long: show its end
  echo "$out" | tail -n 15
  echo "run scripts/fix-style.sh to format" >&2
  status=1
fi
"$PY" scripts/typecheck.py || status=1
exit $status
