#!/usr/bin/env bash
# Execute lessons top to bottom in a plain Jupyter kernel, as "Run all" does (every cell, `#| slow` ones included),
# and save their outputs into the notebooks: what a learner sees on GitHub and in Colab comes from the committed code.
#   tools/execute.sh                 every lesson
#   tools/execute.sh nbs/03_*.ipynb  some of them
# Offline and on the CPU, as the tests run. `nbdev-clean` then strips each one's execution counts and metadata, keeping outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=module://matplotlib_inline.backend_inline
export LORANB_CACHE="${LORANB_CACHE:-$HOME/.cache/loranb}"
files=("$@"); [ ${#files[@]} -gt 0 ] || files=(nbs/[0-9]*.ipynb nbs/engine/*.ipynb nbs/index.ipynb)
total=0
for nb in "${files[@]}"; do
  start=$(date +%s)
  # widget state left by an earlier run describes widgets this run will not make: start from none
  python -c "import json,sys; p=sys.argv[1]; nb=json.load(open(p)); nb['metadata'].pop('widgets',None); open(p,'w').write(json.dumps(nb,indent=1,ensure_ascii=False)+'\n')" "$nb"
  if ! jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=3600 \
       --ExecutePreprocessor.kernel_name=python3 "$nb" >"${TMPDIR:-/tmp}/loranb-execute.log" 2>&1; then
    tail -40 "${TMPDIR:-/tmp}/loranb-execute.log"; echo "FAILED: $nb"; exit 1
  fi
  nbdev-clean --fname "$nb"
  took=$(( $(date +%s) - start )); total=$((total + took))
  printf '%-32s %5d s  %6d KB\n' "$nb" "$took" "$(( $(stat -c %s "$nb") / 1024 ))"
done
echo "executed ${#files[@]} notebook(s) in $total s"
