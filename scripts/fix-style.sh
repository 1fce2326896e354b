#!/usr/bin/env bash
# Apply the automatic fixes of the checks in scripts/lint.sh: ruff's safe lint fixes (import order, unused imports,
# modern syntax), ruff's formatting, and a regenerated type baseline (.ci/mypy-baseline.txt; review its diff: lines
# added there are new type errors being accepted). What is left afterwards (long strings and comments, ...) is
# for a person: scripts/lint.sh lists it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -m ruff check --fix --exit-zero --silent .  # what is left is listed at the end, after formatting
"$PY" -m ruff format --quiet .
"$PY" scripts/typecheck.py --update
"$PY" -m ruff check --no-fix --quiet . || echo "fix-style: the findings above need a person" >&2
