"""Parameter counts of a design at a rung, without training: the abstract model (nnx.eval_shape) of its config.

    cfg = rung_train_config(engineer_settings.train, design, rung, stack_compositions=True)
    count = count_params_abstract(cfg)                    # in-process (imports JAX)
    counts = count_params_isolated({'a': cfg.to_dict()})  # in a child process on the CPU (the ladder's way)

The ladder counts in a child process: building a design program runs its constructor (agent code, so under the
runtime guard), and a parent that touched JAX on a GPU host would reserve accelerator memory that the Engineer's
training children need. The child is started with JAX_PLATFORMS=cpu, a scrubbed environment and a time limit.

N 'non_embedding' is total - embedding - head (Kaplan et al.'s N: the vocabulary matrices excluded).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from absl import logging

from aira_jax.discovery import childproc
from aira_jax.discovery.engineer_settings import experiment_train_config
from aira_jax.discovery.records import Design, DesignKind
from aira_jax.discovery.ladder.settings import Rung

_POLL_S = 0.05


@dataclasses.dataclass(frozen=True)
class ParamCount:
  total: int
  non_embedding: int
  components: dict[str, int] = dataclasses.field(default_factory=dict)

  def n(self, basis: str) -> int:
    return self.non_embedding if basis == 'non_embedding' else self.total

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def param_count_from_components(counts: Mapping[str, Any]) -> ParamCount | None:
  """From count_params' dict ('embedding', 'head', ..., 'total'); None when it has no 'total'."""
  if not isinstance(counts, Mapping) or counts.get('total') is None:
    return None
  total = int(counts['total'])
  vocab = int(counts.get('embedding') or 0) + int(counts.get('head') or 0)
  return ParamCount(total=total, non_embedding=max(total - vocab, 0),
                    components={str(k): int(v) for k, v in counts.items() if v is not None})


# ------------------------------------------------------------------------------------------------ configs
def stacked_pattern(pattern: str, num_layers: int) -> str:
  """The pattern repeated so it holds about `num_layers` mixers (AIRA-Compose's extrapolation by stacking)."""
  from aira_jax.models import compose  # pylint: disable=import-outside-toplevel  (no JAX in compose's imports)
  items = compose.parse_pattern(pattern)
  mixers = sum(1 for item in items if item != compose.MLP) or 1
  reps = max(1, round(num_layers / mixers))
  return pattern if reps == 1 else f'({pattern})*{reps}'


def rung_model_overrides(design: Design, rung: Rung, base_train: Any, *, stack_compositions: bool) -> dict:
  """The rung's model overrides for this design: a composition's pattern is stacked to the rung's depth."""
  model = copy.deepcopy(dict(rung.model))
  if design.kind == DesignKind.COMPOSITION and stack_compositions:
    layers = model.get('num_layers', base_train.model.num_layers)
    model['pattern'] = stacked_pattern(design.source, int(layers))
  return model


def rung_train_config(base_train: Any, design: Design, rung: Rung, *, stack_compositions: bool,
                      steps: int | None = None):
  """The full trainer config the Engineer will use for `design` at `rung` (with `steps` when known)."""
  return experiment_train_config(base_train, design, rung_overrides(design, rung, base_train, steps=steps,
                                                                    stack_compositions=stack_compositions))


def rung_overrides(design: Design, rung: Rung, base_train: Any, *, steps: int | None,
                   stack_compositions: bool) -> dict[str, Any]:
  """The experiment `config` (trainer overrides) of `design` at `rung`."""
  train = copy.deepcopy(dict(rung.train))
  if steps is not None:
    train['max_steps'] = int(steps)
    train['max_tokens'] = 0  # the ladder's step budget is the only budget (max_seconds stays a safety cap)
  out: dict[str, Any] = {}
  model = rung_model_overrides(design, rung, base_train, stack_compositions=stack_compositions)
  if model:
    out['model'] = model
  if train:
    out['train'] = train
  return out


def tokens_per_step(train_cfg: Any) -> int:
  return int(train_cfg.train.global_batch) * int(train_cfg.train.seq_len)


# ------------------------------------------------------------------------------------------------ in-process
def resolve_vocab_size(train_cfg: Any) -> int:
  """The vocabulary the trainer would use: model.vocab_size, else the tokenizer's size (never trains one)."""
  if int(train_cfg.model.vocab_size) > 0:
    return int(train_cfg.model.vocab_size)
  data = train_cfg.data
  if data.tokenizer == 'byte':
    from aira_jax.data.tokenizers import ByteTokenizer  # pylint: disable=import-outside-toplevel
    return int(ByteTokenizer().vocab_size)
  path = str(data.get('spm_model_path', '') or '')
  if path and os.path.isfile(path):
    from aira_jax.data.tokenizers import SentencePieceTokenizer  # pylint: disable=import-outside-toplevel
    return int(SentencePieceTokenizer.load(path).vocab_size)
  logging.info('no sentencepiece model at %r yet: counting with spm_vocab_size=%s', path, data.spm_vocab_size)
  return int(data.spm_vocab_size)


def count_params_abstract(train_cfg: Any) -> ParamCount:
  """Parameters of the model a full trainer config describes, from its abstract (shape-only) build."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from aira_jax.models.build import build_model, count_params  # pylint: disable=import-outside-toplevel
  cfg = train_cfg if hasattr(train_cfg, 'model') else ml_collections.ConfigDict(dict(train_cfg))
  model_cfg = ml_collections.ConfigDict(cfg.model.to_dict())
  model_cfg.vocab_size = resolve_vocab_size(cfg)
  abstract = nnx.eval_shape(lambda: build_model(model_cfg, rngs=nnx.Rngs(0)))
  return param_count_from_components(count_params(abstract))


# ------------------------------------------------------------------------------------------------ isolated
def _child_env(workdir: str) -> dict[str, str]:
  from aira_jax.discovery.training_run import child_env  # pylint: disable=import-outside-toplevel
  env = child_env(workdir, 'cpu')
  env['JAX_PLATFORMS'] = 'cpu'
  env.pop('CUDA_VISIBLE_DEVICES', None)
  return env


def count_params_isolated(configs: Mapping[str, Mapping[str, Any]], *, timeout_s: float = 300.0,
                          workdir: str | None = None) -> dict[str, ParamCount | str]:
  """Counts each full trainer config (plain dicts) in one CPU child process; a str value is that key's error."""
  if not configs:
    return {}
  with tempfile.TemporaryDirectory(prefix='ladder-params-', dir=workdir) as tmp:
    with open(os.path.join(tmp, 'request.json'), 'w', encoding='utf-8') as f:
      json.dump({str(k): v for k, v in configs.items()}, f)
    log_path = os.path.join(tmp, 'child.log')
    with open(log_path, 'ab') as log:
      proc = subprocess.Popen([sys.executable, '-m', 'aira_jax.discovery.ladder.params', tmp], cwd=tmp,
                              env=_child_env(tmp), stdin=subprocess.DEVNULL, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    start, timed_out = time.monotonic(), False
    try:
      while proc.poll() is None:
        if time.monotonic() - start > timeout_s:
          timed_out = True
          childproc.kill_group(proc)
          break
        time.sleep(_POLL_S)
    finally:
      if proc.poll() is None:
        childproc.kill_group(proc)
    out_path = os.path.join(tmp, 'result.json')
    if not os.path.exists(out_path):
      why = f'timed out after {timeout_s:.0f} s' if timed_out else f'exited with status {proc.returncode}'
      msg = f'parameter-count child {why}: {childproc.file_tail(log_path, 2000)}'
      logging.warning('%s', msg)
      return {str(k): msg for k in configs}
    with open(out_path, encoding='utf-8') as f:
      found = json.load(f)
  out: dict[str, ParamCount | str] = {}
  for key in configs:
    value = found.get(str(key))
    if isinstance(value, dict) and 'total' in value:
      out[str(key)] = ParamCount(int(value['total']), int(value['non_embedding']), dict(value['components']))
    else:
      out[str(key)] = str((value or {}).get('error') if isinstance(value, dict) else value) or 'no count'
  return out


def _child_main(workdir: str) -> int:
  import resource  # pylint: disable=import-outside-toplevel
  resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.FLAGS.mark_as_parsed()
  import jax  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  import ml_collections  # pylint: disable=import-outside-toplevel
  from flax import nnx  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  from aira_jax.data import tokenizers  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  from aira_jax.models import build  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  from aira_jax.discovery.runtime_guard import RuntimeGuard  # pylint: disable=import-outside-toplevel
  with open(os.path.join(workdir, 'request.json'), encoding='utf-8') as f:
    request = json.load(f)
  guard = RuntimeGuard.install()  # after every import: only the programs' own code is refused
  results: dict[str, Any] = {}
  for key, cfg in request.items():
    try:
      count = count_params_abstract(ml_collections.ConfigDict(cfg))
      refused = guard.drain()
      results[key] = ({'error': f"design program policy: refused {'; '.join(refused[:5])}"} if refused
                      else count.to_dict())
    except Exception as e:  # pylint: disable=broad-except
      results[key] = {'error': f'{type(e).__name__}: {e}'[:2000]}
  with open(os.path.join(workdir, 'result.json.tmp'), 'w', encoding='utf-8') as f:
    json.dump(results, f)
  os.replace(os.path.join(workdir, 'result.json.tmp'), os.path.join(workdir, 'result.json'))
  return 0


if __name__ == '__main__':
  if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
    print('usage: python -m aira_jax.discovery.ladder.params <dir> (started by the ladder)', file=sys.stderr)
    sys.exit(2)
  sys.exit(_child_main(sys.argv[1]))
