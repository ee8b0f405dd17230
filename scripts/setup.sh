#!/usr/bin/env bash
# Creates .venv (if missing) and installs prottrans-jax with its test extras, from nothing.
# torch is pinned first to the CPU build (2.13.0) so nothing later pulls a multi-GB CUDA build.
# Prints one line per package pip collects; pip's full output goes to .venv/setup.log (shown on failure).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
START=$SECONDS

step() { echo "[setup $(( SECONDS - START ))s] $*"; }

# Runs pip, showing what it collects and installs; on failure, the end of pip's log.
pip_install() {
  local log=.venv/setup.log rc
  echo "== pip install $*" >>"$log"
  set +o pipefail
  .venv/bin/python -m pip install --progress-bar off "$@" 2>&1 | tee -a "$log" \
    | grep --line-buffered -E '^(Collecting|Installing collected|Successfully installed)' \
    | sed -u -e 's/^Collecting /  collecting /' \
             -e 's/^Installing collected packages:.*/  installing (unpacking; the longest step).../' \
             -e 's/^Successfully installed.*/  done/'
  rc=${PIPESTATUS[0]}
  set -o pipefail
  if [ "$rc" -ne 0 ]; then
    echo "pip failed (exit $rc); the end of its log ($log):" >&2
    tail -n 40 "$log" >&2
    exit "$rc"
  fi
}

if [ -x .venv/bin/python ]; then
  step "using the existing virtual environment .venv"
else
  step "creating the virtual environment .venv with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
: >.venv/setup.log
step "1/2 torch 2.13.0, CPU build (first, so nothing pulls a CUDA build)"
pip_install "torch==2.13.0"
step "2/2 prottrans-jax and its pinned dependencies (jax, flax, seqio with TensorFlow, transformers, ...;" \
     "about 4.5 GB on a fresh machine: a few minutes)"
pip_install -c constraints.txt -e ".[test]"
.venv/bin/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
step "ready: .venv ($(du -sh .venv 2>/dev/null | cut -f1)); run .venv/bin/prottrans-jax --help, or 'source .venv/bin/activate' first"
