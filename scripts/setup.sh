#!/usr/bin/env bash
# Create .venv at the repository root (if missing) and install medvl with its test dependencies.
# Safe to run again: an up-to-date environment is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ] && ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: medvl needs Python 3.11 or newer; $PYTHON is $("$PYTHON" -V 2>&1 || echo missing)." \
       "Run with PYTHON=/path/to/python3.11 ./scripts/setup.sh" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# The local wheel mirror makes pip print one harmless "Location ... is ignored" warning per package: hide those only.
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
# torch first and pinned: a CUDA build that also runs on the CPU; torchvision only for optional backbones.
.venv/bin/python -c "import torch, torchvision, sys; sys.exit(not torch.__version__.startswith('2.14.1'))" 2>/dev/null \
  || pip install torch==2.14.1 torchvision==0.29.1
pip install -r requirements.txt
pip install --no-deps -e .
.venv/bin/python -c "import medvl, torch; print(f'medvl {medvl.__version__} ready (torch {torch.__version__})')"
