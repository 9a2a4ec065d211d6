#!/usr/bin/env bash
# Every GPU check of the open issues in ONE device call (device time is scarce: ~15 min a task, start included).
#
# Prepare here (once):   echo /.whl/ >> .git/info/exclude; echo /.shared/ >> .git/info/exclude
#                        wheels in .whl/ (see bench/README.md); mkdir -p .shared && cp -r ../shared/data/harness .shared/
# Run on the device:     run(command="bash bench/gpu_suite.sh", carry=[".whl", ".shared"], timeout_s=560)
# Results come back in $OUT (one tarball of bench/results plus the logs).
#
# Steps run most important first, each under its own timeout; a step whose limit would overrun the suite's budget
# (SUITE_BUDGET_S, default 540 s, measured from the start of this script) is skipped and says so. Run one part
# alone with SUITE_ONLY=<step name> (e.g. SUITE_ONLY=kernels).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_suite_out}
BUDGET=${SUITE_BUDGET_S:-540}
ONLY=${SUITE_ONLY:-}
TODAY=$(date +%F)
mkdir -p "$OUT" bench/results
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"

step() {  # name, seconds, command...
  local name=$1 secs=$2; shift 2
  if [ -n "$ONLY" ] && [ "$ONLY" != "$name" ]; then return; fi
  if [ $((SECONDS + secs)) -gt "$BUDGET" ]; then
    echo "=== $name SKIPPED: ${secs}s limit would pass the ${BUDGET}s budget (at ${SECONDS}s)"
    return
  fi
  echo "=== $name (limit ${secs}s, at ${SECONDS}s)"
  timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
  echo "exit $? for $name (at ${SECONDS}s)"
  grep -vE '^[IWE][0-9]{4} ' "$OUT/$name.log" | tail -n 30
}

# Issue 6 (Pallas kernels). 1: correctness of the Mosaic GPU kernels of all three ops against the fp32 oracles.
python3 -c "import pytest" 2>/dev/null || echo "pytest is missing: carry the pytest, pluggy and iniconfig wheels in .whl/"
step pallas_gpu_tests 120 python3 -m pytest -m gpu tests/test_pallas_gpu.py tests/test_pallas_delta.py -q -rs -p no:cacheprovider
[ -f "$OUT/pallas_gpu_tests.log" ] && cp "$OUT/pallas_gpu_tests.log" "bench/results/test_pallas_gpu_${TODAY}.log"
# 2: kernel timings, Pallas vs XLA vs fla (fla first in a subprocess), one table; rows saved after each op.
step kernels 210 python3 bench/kernels.py --iters=10 --fla_timeout=80
# 3: exploration-scale DeltaNet training, ops on auto (Pallas where a kernel applies) vs forced XLA, and fla's
#    PyTorch DeltaNet at the same size; each row lists the path every op took.
step train_throughput 170 python3 bench/train_throughput.py --preset=explore --designs=deltanet --batches=16 \
  --ops_impls=auto,xla --steps=10 --warmup=2 --fla_timeout=80
# Earlier issues, when budget remains. "Discovery core": gates + compile + evaluation overhead.
step overhead 150 python3 bench/overhead.py --measure_steps=20
# "Evaluation": the harness port's items/s (lm-eval side only when its wheels were carried).
HARNESS=.shared/harness
if [ -d "$HARNESS" ]; then
  if python3 -c "import lm_eval" 2>/dev/null; then LM=""; else LM="--skip_lm_eval"; fi
  step harness_speed 120 python3 bench/harness_speed.py --data_dir="$HARNESS" $LM
fi
# Issue 7 ("Compose search"): a proxy-scale compose search with a fixed budget. Too long for the suite's budget next
# to the kernel checks: run it alone in its own call, SUITE_ONLY=compose_proxy SUITE_BUDGET_S=560 (8 compositions
# of 16 sublayers at d_model 256, 30 s each, no ladder), then copy its compose.md into bench/results.
if [ "$ONLY" = "compose_proxy" ]; then
  step compose_proxy 540 python3 -m aira_jax.compose --config=configs/compose_proxy.py --workdir="$OUT/compose_proxy" \
    --config.compose.num_patterns=8 --config.compose.init_random=6 --config.engineer.train.train.max_seconds=30 \
    --config.compose.max_seconds=420 --config.compose.run_ladder=False
  [ -f "$OUT/compose_proxy/compose.md" ] && cp "$OUT/compose_proxy/compose.md" "bench/results/compose_proxy_${TODAY}.md"
fi
tar -czf "$OUT/results.tgz" bench/results
ls -la "$OUT"
echo "suite done at ${SECONDS}s"
