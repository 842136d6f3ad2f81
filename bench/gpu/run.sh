#!/usr/bin/env bash
# The GPU check on a bare CUDA machine (torch, lightning, transformers, peft, no package index),
# from the repository root, with bench/gpu/wheels/ (python bench/gpu/prepare.py) carried along:
#   bash bench/gpu/run.sh              # the CSV goes to $OUT/gpu_check.csv, else logs/bench/
# Extra arguments go to check.py (e.g. --budget-s 420, --parts loss error).
set -euo pipefail
cd "$(dirname "$0")/../.."
ls bench/gpu/wheels/*.whl >/dev/null || { echo "no wheels: run python bench/gpu/prepare.py first" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/dftlab-site \
  bench/gpu/wheels/*.whl
export PYTHONPATH=/tmp/dftlab-site:$PWD/src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled
out=${OUT:-logs/bench}
mkdir -p "$out"
set -o pipefail
python3 bench/gpu/check.py --out "$out/gpu_check.csv" "$@" 2>&1 | tee "$out/gpu_check.log"
