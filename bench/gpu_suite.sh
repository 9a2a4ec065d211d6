#!/usr/bin/env bash
# Every GPU check of the open issues in ONE device call (device time is scarce: ~15 min a task, start included).
#
# Prepare here (once):   echo /.whl/ >> .git/info/exclude; echo /.shared/ >> .git/info/exclude
#                        wheels in .whl/ (see bench/README.md); mkdir -p .shared && cp -r ../shared/data/harness .shared/
# Run on the device:     run(command="bash bench/gpu_suite.sh", carry=[".whl", ".shared"], timeout_s=560)
# Results come back in $OUT (one tarball of bench/results plus the logs).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_suite_out}
mkdir -p "$OUT"
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
  echo "=== $name (limit ${secs}s)"
  timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
  echo "exit $? for $name"
  grep -vE '^[IWE][0-9]{4} ' "$OUT/$name.log" | tail -n 25
}

# Issue "Foundation": exploration-scale DeltaNet and Llama training throughput vs fla's PyTorch DeltaNet.
step train_throughput 240 python3 bench/train_throughput.py --preset=explore --steps=15 --warmup=3
# Issue "Discovery core": gates + compile + evaluation overhead against an exploration-scale run.
step overhead 150 python3 bench/overhead.py --measure_steps=20
# Issue "Evaluation": the harness port's items/s (lm-eval side only when its wheels were carried).
HARNESS=.shared/harness
if [ -d "$HARNESS" ]; then
  if python3 -c "import lm_eval" 2>/dev/null; then LM=""; else LM="--skip_lm_eval"; fi
  step harness_speed 120 python3 bench/harness_speed.py --data_dir="$HARNESS" $LM
fi
tar -czf "$OUT/results.tgz" bench/results
ls -la "$OUT"
