#!/usr/bin/env bash
# fitscope's GPU check in one call: on a bare GPU machine that has Python and torch (and the
# scientific stack: numpy, pandas, scipy, scikit-learn, pyarrow, matplotlib, pytest), install
# what it lacks from the wheels in .whl/ (made by scripts/gpu-wheels.sh), run the CUDA tests,
# then the single-run benchmark and the packed benchmark, and write one results file,
# $OUT/gpu-check.md (OUT defaults to gpu-check/). Under 8 minutes on an H100.
#
#   bash scripts/gpu-check.sh           # on the GPU machine, from the repository's root
#   bash scripts/gpu-check.sh --cpu     # every step on the CPU, quick: what a CPU can check
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-check}"
mkdir -p "$OUT"
results="$OUT/gpu-check.md"
device=cuda
bench=(--epochs 3 --sweep-epochs 0 --compile none,graph --packed-epochs 10)
if [ "${1:-}" = "--cpu" ]; then
  device=cpu
  bench=(--quick)
fi
export PYTHONUNBUFFERED=1

step() {  # step NAME COMMAND...: run it, its output to $OUT/NAME.log, its status to the results
  local name=$1 start=$SECONDS
  shift
  echo "== $name: $*"
  "$@" >"$OUT/$name.log" 2>&1
  local status=$?
  echo "- $name: exit $status in $((SECONDS - start)) s (\`$*\`)" >>"$results"
  tail -n 5 "$OUT/$name.log"
  return $status
}

{
  echo "# fitscope GPU check"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- device: $device"
} >"$results"

# 1. what the machine lacks, from the carried wheels (nothing is downloaded there)
if ls .whl/*.whl >/dev/null 2>&1; then
  step install python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/fitscope-site .whl/*.whl
  export PYTHONPATH="/tmp/fitscope-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}"  # fitscope itself, from this checkout
step environment python3 -c "import torch, hydra, omegaconf, plotly, fitscope; \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'); \
print('hydra', hydra.__version__, 'omegaconf', omegaconf.__version__, 'plotly', plotly.__version__)"
sed -n '1,3p' "$OUT/environment.log" | sed 's/^/  - /' >>"$results"

# 2. the CUDA tests (they skip, saying why, without a GPU), then the training tests
step cuda-tests python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py -ra
grep -E "passed|failed|skipped|error" "$OUT/cuda-tests.log" | tail -n 1 | sed 's/^/  - /' >>"$results"
if [ "$device" = cuda ]; then
  step training-tests python3 -m pytest -q -p no:cacheprovider tests/test_training.py tests/test_packed.py -m "not slow"
  grep -E "passed|failed" "$OUT/training-tests.log" | tail -n 1 | sed 's/^/  - /' >>"$results"
fi

# 3. the benchmarks: the tutorial loop against fitscope's step modes, and basic against packed
step bench python3 src/bench.py --device "$device" "${bench[@]}"
{
  echo
  echo "## Benchmark"
  echo
  echo '```'
  cat "$OUT/bench.log"
  echo '```'
} >>"$results"
echo "results: $results"
