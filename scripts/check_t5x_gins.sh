#!/usr/bin/env bash
# Runs the README's three t5x commands (train, eval, infer with the tiny twins) verbatim, from the
# repository root, with a Python that has t5x installed, and checks what each one wrote.
#
#   scripts/check_t5x_gins.sh /path/to/t5x_venv/bin/python [OUT_DIR (default /tmp/prot_t5_tiny_t5x)]
#
# t5x is not on PyPI: install it and its git dependencies (airio, jestimator) from their repositories
# beside prottrans-jax. OUT_DIR must not exist yet. Extra t5x flags for the training run (e.g.
# --gin.TRAIN_STEPS=20) go in T5X_TRAIN_FLAGS; eval and infer then read that run's last checkpoint.
set -euo pipefail
PYTHON=${1:?usage: scripts/check_t5x_gins.sh PYTHON_WITH_T5X [OUT_DIR]}
OUT=${2:-/tmp/prot_t5_tiny_t5x}
cd "$(dirname "$0")/.."
[[ -e "$OUT" ]] && { echo "error: $OUT exists; give a new OUT_DIR" >&2; exit 2; }
mkdir -p "$OUT/logs"
"$PYTHON" -c "import t5x" 2>/dev/null || { echo "error: $PYTHON cannot import t5x" >&2; exit 2; }

# Runs one t5x command, its log in OUT/logs; on failure, the log's end.
run() {
  local name=$1; shift
  echo "[t5x] python $*"
  if ! "$PYTHON" "$@" >"$OUT/logs/$name.log" 2>&1; then
    tail -n 30 "$OUT/logs/$name.log" >&2
    echo "error: t5x $name failed (log: $OUT/logs/$name.log)" >&2
    exit 1
  fi
}

# shellcheck disable=SC2086  # T5X_TRAIN_FLAGS is a list of flags
run train -m t5x.train --gin_file=gin/prot_t5_tiny_t5x.gin --gin.MODEL_DIR="'$OUT'" ${T5X_TRAIN_FLAGS:-}
# The newest checkpoint_<step> (by step: checkpoint_100 after checkpoint_50).
CHECKPOINT=$(ls -d "$OUT"/checkpoint_* | awk -F_ '{print $NF, $0}' | sort -n | tail -1 | cut -d' ' -f2-)
echo "[t5x] trained: $CHECKPOINT"
run eval -m t5x.eval --gin_file=gin/prot_t5_tiny_t5x_eval.gin \
  --gin.CHECKPOINT_PATH="'$CHECKPOINT'" --gin.EVAL_OUTPUT_DIR="'$OUT/eval'"
echo "[t5x] eval: $(cat "$OUT"/eval/inference_eval/*-metrics.jsonl)"
run infer -m t5x.infer --gin_file=gin/prot_t5_tiny_t5x_infer.gin \
  --gin.CHECKPOINT_PATH="'$CHECKPOINT'" --gin.INFER_OUTPUT_DIR="'$OUT/infer'"
PREDICTIONS=$(ls "$OUT"/infer/*-predict.jsonl-00000-of-00001)
echo "[t5x] infer: $(wc -l <"$PREDICTIONS") predictions in $PREDICTIONS"
echo "[t5x] t5x at $("$PYTHON" -c 'import os, t5x; print(os.path.dirname(os.path.dirname(t5x.__file__)))' 2>/dev/null)"
