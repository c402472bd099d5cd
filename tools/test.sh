#!/usr/bin/env bash
# Run every test of loranb: notebooks and module in sync, README in sync, the code's shape, notebook tests, integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export LORANB_CACHE="${LORANB_CACHE:-$(mktemp -d)}" MPLBACKEND=Agg

echo "== 1. nbdev-export: the module must match the notebooks"
before=$(git status --porcelain -- loranb)
nbdev-export
after=$(git status --porcelain -- loranb)
if [ "$before" != "$after" ]; then
  echo "loranb/ changed after nbdev-export: run nbdev-export and commit the module with the notebooks"
  git status --short -- loranb; exit 1
fi
python tools/readme.py --check
python tools/code_check.py   # function length, train.py size, import circles, lesson order

echo "== 2. nbdev-test: the lessons' own tests"
nbdev-test --n-workers 2 --timing

echo "== 3. pytest: integration tests"
pytest -q tests/
