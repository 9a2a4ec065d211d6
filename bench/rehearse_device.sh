#!/usr/bin/env bash
# A dress rehearsal of bench/gpu_suite.sh on CPU, in a Python that has what the GPU machine has and no more
# (../shared/device/README.md: jax 0.11.2, flax 0.12.10, optax, orbax-checkpoint 0.12.4, chex, einops,
# sentencepiece, absl-py, scikit-learn; no grain, ml_collections or google-genai), with the carried wheels of
# .whl/ installed the way the suite installs them (pip --target /tmp/site, on PYTHONPATH).
#
#     bash bench/rehearse_device.sh            # about 5 minutes on 2 cores
#
# It catches what only the device's setup shows: a wheel missing from .whl/, a child process that cannot see
# /tmp/site, a data path that exists here and not there. Each part runs at CPU size: the overhead measurement
# (gates child + training child + harness), a compose search on a micro proxy (training children), the kernel and
# throughput benchmarks' smoke modes. torch/fla are left out (the fla rows only run on the GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON312:-}
if [ -z "$PY" ]; then
  for cand in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do
    if "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then PY=$cand; break; fi
  done
fi
[ -n "$PY" ] || { echo "no Python 3.12 found (set PYTHON312)"; exit 1; }
VENV=${REHEARSAL_VENV:-/tmp/aira_rehearsal_venv}
SITE=/tmp/aira_rehearsal_site
SITE_LM=/tmp/aira_rehearsal_site_lm
OUT=${OUT:-/tmp/aira_rehearsal_out}
rm -rf "$OUT" && mkdir -p "$OUT"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV" || exit 1
  "$VENV/bin/pip" install -q "jax==0.11.2" "flax==0.12.10" "optax==0.2.8" "orbax-checkpoint==0.12.4" chex einops \
    sentencepiece absl-py scikit-learn > "$OUT/pip.log" 2>&1 || { echo "venv install failed: $OUT/pip.log"; exit 1; }
fi
rm -rf "$SITE"
"$VENV/bin/pip" install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl \
  > "$OUT/pip_site.log" 2>&1 || { echo "wheel install failed: $OUT/pip_site.log"; exit 1; }
export PYTHONPATH=$SITE:$PWD JAX_PLATFORMS=cpu PYTHONUNBUFFERED=1
PYBIN=$VENV/bin/python
[ -d .shared/harness ] && export AIRA_HARNESS_DATA=$PWD/.shared/harness
FAILED=()
part() {  # name, command...
  local name=$1; shift
  echo "=== $name"
  if timeout 900 "$@" > "$OUT/$name.log" 2>&1; then echo "ok: $name"; else
    echo "FAILED: $name (log $OUT/$name.log)"; grep -vE '^[IWE][0-9]{4} ' "$OUT/$name.log" | tail -n 15
    FAILED+=("$name")
  fi
}
part imports "$PYBIN" -c "import aira_jax.discover, aira_jax.compose, aira_jax.train.trainer, \
aira_jax.discovery.store, aira_jax.evaluate.harness, aira_jax.ops; import grain, ml_collections; print('imports ok')"
# The suite's pytest step: collection (test imports, markers) with the carried pytest.
part gpu_tests_collect "$PYBIN" -m pytest --collect-only -q -p no:cacheprovider -m gpu tests/test_pallas_gpu.py \
  tests/test_pallas_delta.py
part overhead "$PYBIN" bench/overhead.py --quick --measure_steps=10 --tasks=piqa --eval_limit=4 --out=-
part compose "$PYBIN" -m aira_jax.compose --config=configs/compose_tiny.py --workdir="$OUT/compose" \
  --config.compose.proxy_sublayers=4 --config.compose.target_sublayers=8 --config.compose.num_patterns=2 \
  --config.compose.batch_size=2 --config.compose.workers=1 --config.compose.run_ladder=False \
  --config.compose.aggregate=False --config.engineer.train.model.d_model=32 --config.engineer.train.model.num_heads=2 \
  --config.engineer.train.train.seq_len=32 --config.engineer.train.train.global_batch=4 \
  --config.engineer.train.train.max_steps=8 --config.engineer.train.train.warmup_steps=2 \
  --config.engineer.train.train.eval_batches=1 --config.engineer.train.data.val_docs=8
# --profile: the profiler breakdowns the device run prints by default (here from the host threads' events).
part kernels_smoke "$PYBIN" bench/kernels.py --smoke --profile=xla --case_timeout=120 --out="$OUT"
if ! grep -q "Where the fwd+bwd time goes" "$OUT/kernels_smoke.log"; then
  echo "FAILED: kernels_smoke printed no profile breakdown"; FAILED+=("kernels_smoke (profile)")
fi
part train_throughput "$PYBIN" bench/train_throughput.py --preset=tiny_cpu --d_model=32 --num_layers=1 --seq=32 \
  --batches=2 --steps=2 --warmup=1 --no-fla --cases=deltanet,attention --profile --out="$OUT"
# lm-eval's closure from its two carries (.whl_lm1/, .whl_lm2/), as the suite's harness call installs it: the
# bridge must import and lm-eval must drive the model (harness_speed's quick mode prints an lm-eval row).
if ls .whl_lm1/*.whl .whl_lm2/*.whl >/dev/null 2>&1; then
  rm -rf "$SITE_LM"
  "$VENV/bin/pip" install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE_LM" .whl_lm1/*.whl \
    .whl_lm2/*.whl > "$OUT/pip_site_lm.log" 2>&1 || echo "lm-eval wheel install failed: $OUT/pip_site_lm.log"
  part harness_lm_eval env PYTHONPATH="$SITE_LM:$PYTHONPATH" "$PYBIN" bench/harness_speed.py --quick \
    --data_dir="${AIRA_HARNESS_DATA:-.shared/harness}" --out="$OUT"
  if ! grep -q "| lm-eval .*batch 1" "$OUT/harness_lm_eval.log" || ! grep -q "batched JAX forward" \
      "$OUT/harness_lm_eval.log"; then
    echo "FAILED: harness_lm_eval ran without its two lm-eval rows"; FAILED+=("harness_lm_eval (no lm-eval rows)")
  fi
else
  echo "=== harness_lm_eval SKIPPED: no .whl_lm1/ and .whl_lm2/ here"
fi
if [ "${#FAILED[@]}" -gt 0 ]; then echo "rehearsal FAILED: ${FAILED[*]}"; exit 1; fi
echo "rehearsal passed"
