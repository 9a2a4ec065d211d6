"""Mesh resolution, logical-axis rules -> PartitionSpecs, and multi-device loss equivalence."""
import json
import os
import subprocess
import sys
import textwrap

from flax import nnx
import jax
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import optax
import pytest

from aira_jax.train import schedules
from aira_jax.train import sharding as shd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeMesh:
  """Just enough of a Mesh (axis sizes) for the spec rules, without needing 8 devices."""

  def __init__(self, data=1, fsdp=1, tensor=1):
    self.shape = {'data': data, 'fsdp': fsdp, 'tensor': tensor}


def test_resolve_mesh_shape():
  cfg = ml_collections.ConfigDict({'data': -1, 'fsdp': 2, 'tensor': 2})
  assert shd.resolve_mesh_shape(cfg, 8) == (2, 2, 2)
  assert shd.resolve_mesh_shape({'data': 8, 'fsdp': 1, 'tensor': 1}, 8) == (8, 1, 1)
  assert shd.resolve_mesh_shape({'data': 1, 'fsdp': -1, 'tensor': 1}, 4) == (1, 4, 1)
  with pytest.raises(ValueError, match='at most one axis'):
    shd.resolve_mesh_shape({'data': -1, 'fsdp': -1, 'tensor': 1}, 8)
  with pytest.raises(ValueError, match='do not divide'):
    shd.resolve_mesh_shape({'data': -1, 'fsdp': 3, 'tensor': 1}, 8)
  with pytest.raises(ValueError, match='needs 4 devices'):
    shd.resolve_mesh_shape({'data': 2, 'fsdp': 2, 'tensor': 1}, 8)
  with pytest.raises(ValueError, match='mesh.tensor'):
    shd.resolve_mesh_shape({'data': 1, 'fsdp': 1, 'tensor': 0}, 1)


def test_make_mesh_single_device():
  mesh = shd.make_mesh({'data': -1, 'fsdp': 1, 'tensor': 1})
  assert mesh.axis_names == shd.MESH_AXES
  assert mesh.shape['data'] == jax.device_count()


def test_logical_rules_map_to_expected_specs():
  mesh = FakeMesh(data=2, fsdp=2, tensor=2)
  spec = lambda axes, shape: shd.logical_to_spec(axes, shape, mesh)
  assert spec(('embed', 'mlp'), (64, 128)) == P('fsdp', 'tensor')
  assert spec(('vocab', 'embed'), (256, 64)) == P('tensor', 'fsdp')
  assert spec(('embed', 'heads', 'kv'), (64, 4, 16)) == P('fsdp', 'tensor', None)
  assert spec(('layers', 'embed'), (3, 64)) == P(None, 'fsdp')
  assert spec(('batch', 'length'), (8, 32)) == P(('data', 'fsdp'), None)
  # Not divisible by the mesh axis: replicated rather than an error.
  assert spec(('embed', 'mlp'), (63, 128)) == P(None, 'tensor')
  assert spec(('heads',), (3,)) == P(None)
  # A mesh axis is used once per array: the second 'tensor' dim is replicated.
  assert spec(('heads', 'mlp'), (4, 128)) == P('tensor', None)
  # Unknown logical names are replicated.
  assert spec(('embed', 'mystery'), (64, 8)) == P('fsdp', None)
  # Size-1 mesh axes are not named.
  assert shd.logical_to_spec(('embed', 'mlp'), (64, 128), FakeMesh(data=8)) == P(None, None)
  assert shd.logical_to_spec(('batch',), (8,), FakeMesh(data=8)) == P('data')
  with pytest.raises(ValueError, match='logical axes'):
    spec(('embed',), (4, 4))


def test_fallback_spec_for_unnamed_params():
  mesh = FakeMesh(data=2, fsdp=4, tensor=1)
  assert shd.fallback_spec((16, 64), mesh) == P(None, 'fsdp')
  assert shd.fallback_spec((64, 16), mesh) == P('fsdp', None)
  assert shd.fallback_spec((6, 8), mesh) == P(None, 'fsdp')  # largest is divisible
  assert shd.fallback_spec((10, 6), mesh) == P()  # nothing divides by 4
  assert shd.fallback_spec((12, 10), mesh) == P('fsdp', None)  # 12 divides, 10 does not
  assert shd.fallback_spec((), mesh) == P()
  assert shd.fallback_spec((64, 64), FakeMesh(data=8)) == P()  # no fsdp axis to use


class TinyAnnotated(nnx.Module):
  """Project-style params (logical names) next to an agent-style param (none)."""

  def __init__(self, rngs: nnx.Rngs):
    init = nnx.initializers.normal(0.02)
    self.embed = nnx.Param(nnx.with_partitioning(init, ('vocab', 'embed'))(rngs.params(), (32, 16)))
    self.up = nnx.Param(nnx.with_partitioning(init, ('embed', 'mlp'))(rngs.params(), (16, 24)))
    self.norm_scale = nnx.Param(nnx.with_partitioning(nnx.initializers.ones, ('embed',))(
        rngs.params(), (16,)))
    self.agent = nnx.Param(init(rngs.params(), (8, 16)))  # no logical names

  def __call__(self, x):
    return x


def _abstract_params():
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(lambda: TinyAnnotated(nnx.Rngs(0)))
  return nnx.split(model, nnx.Param, ...)[1]


def test_state_specs_on_model_params():
  specs = shd.state_specs(_abstract_params(), FakeMesh(data=1, fsdp=2, tensor=2))
  assert specs == {'embed': P('tensor', 'fsdp'), 'up': P('fsdp', 'tensor'),
                   'norm_scale': P('fsdp'), 'agent': P(None, 'fsdp')}


def test_opt_state_shardings_follow_params():
  mesh = shd.make_mesh({'data': 1, 'fsdp': 1, 'tensor': 1}, devices=jax.devices()[:1])
  params_state = _abstract_params()
  abs_params = nnx.to_pure_dict(params_state)
  param_sh = shd.named(mesh, {'embed': P('tensor', 'fsdp'), 'up': P('fsdp', 'tensor'),
                              'norm_scale': P(), 'agent': P(None, 'fsdp')})
  cfg = ml_collections.ConfigDict(dict(lr=1e-3, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
                                       clip_norm=1.0))
  tx = schedules.make_optimizer(cfg)
  opt_sh = shd.opt_state_shardings(tx, abs_params, param_sh, mesh)
  adam = opt_sh[1].inner_state[0]
  assert isinstance(adam, optax.ScaleByAdamState)
  assert adam.mu['up'].spec == P('fsdp', 'tensor') and adam.nu['embed'].spec == P('tensor', 'fsdp')
  assert adam.count.spec == P()
  assert opt_sh[1].hyperparams['learning_rate'].spec == P()


def test_make_global_batch_single_process():
  mesh = shd.make_mesh({'data': -1, 'fsdp': 1, 'tensor': 1})
  local = {'tokens': np.arange(2 * jax.device_count() * 5, dtype=np.int32).reshape(-1, 5)}
  out = shd.make_global_batch(local, shd.batch_sharding(mesh))
  np.testing.assert_array_equal(np.asarray(out['tokens']), local['tokens'])
  assert out['tokens'].sharding.spec == P(('data', 'fsdp'))
  assert shd.host_slice(8) == slice(0, 8)


_CHILD = textwrap.dedent('''
    import json, sys
    import jax
    from aira_jax.train import base_config, schedules, train, trainer
    from aira_jax.train import sharding as shd, state as state_lib
    print('DEVICES', jax.device_count())
    for mesh_arg, workdir in zip(sys.argv[1::2], sys.argv[2::2]):
      c = base_config()
      c.model.update(d_model=32, num_layers=2, num_heads=4, mlp_hidden=64)
      c.data.update(synthetic_num_docs=200, val_docs=8)
      c.train.update(seq_len=32, global_batch=16, max_steps=5, warmup_steps=2, lr=3e-3,
                     eval_every=0, eval_batches=1, log_every=1, checkpoint_every=0,
                     compute_dtype='float32', tensorboard=False)
      d, f, t = (int(x) for x in mesh_arg.split(','))
      c.mesh.update(data=d, fsdp=f, tensor=t)
      summary = train(c, workdir)
      # How the real model's params lie on this mesh (proves the mesh was really used).
      builders = trainer.default_builders()
      model_cfg = trainer._resolve_model_config(c.model, builders.make_tokenizer(c.data))
      setup = state_lib.setup_state(builders.build_model, model_cfg, c.seed,
                                    schedules.make_optimizer(c.train), shd.make_mesh(c.mesh))
      specs = [str(s.spec) for s in jax.tree.leaves(setup.shardings.params)]
      split = sum(("'fsdp'" in s or "'tensor'" in s) for s in specs)
      print('RESULT', json.dumps({'mesh': mesh_arg, 'split_params': split,
                                  'final_val_loss': summary['final_val_loss']}))
''')


def _run_child(runs: dict[str, str], devices: int) -> dict[str, dict]:
  env = dict(os.environ)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  env['JAX_PLATFORMS'] = 'cpu'
  args = [x for mesh, wd in runs.items() for x in (mesh, wd)]
  out = subprocess.run([sys.executable, '-c', _CHILD, *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'DEVICES {devices}' in out.stdout
  results = {}
  for line in out.stdout.splitlines():
    if line.startswith('RESULT '):
      rec = json.loads(line[len('RESULT '):])
      results[rec['mesh']] = rec
  for mesh, workdir in runs.items():
    losses = {}
    with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
      for line in f:
        rec = json.loads(line)
        if rec['kind'] == 'train':
          losses[rec['step']] = rec['loss']
    results[mesh]['losses'] = [losses[s] for s in sorted(losses)]
  return results


def test_eight_device_meshes_match_one_device(tmp_path):
  """data=2,fsdp=2,tensor=2 and data=8 give the single-device loss trajectory.

  Tolerance: 1e-5 relative. The math is identical; only the order of float32 reductions differs
  (per-device partial sums of the loss and of sharded matmuls), which moves results by ~1e-7.
  """
  ref = _run_child({'1,1,1': str(tmp_path / 'one')}, 1)['1,1,1']
  assert len(ref['losses']) == 5 and ref['losses'][-1] < ref['losses'][0]
  got = _run_child({'2,2,2': str(tmp_path / 'mixed'), '8,1,1': str(tmp_path / 'data')}, 8)
  assert got['2,2,2']['split_params'] > 0, 'no parameter was sharded over fsdp/tensor'
  assert got['8,1,1']['split_params'] == 0
  for mesh in ('2,2,2', '8,1,1'):
    np.testing.assert_allclose(got[mesh]['losses'], ref['losses'], rtol=1e-5, err_msg=mesh)
    np.testing.assert_allclose(got[mesh]['final_val_loss'], ref['final_val_loss'], rtol=1e-5,
                               err_msg=mesh)


_MULTIHOST_CONFIG = textwrap.dedent('''
    from aira_jax.train.config import base_config

    def get_config():
      c = base_config()
      c.model.update(d_model=32, num_layers=2, num_heads=2, mlp_hidden=64)
      c.data.update(synthetic_num_docs=200, val_docs=8)
      c.train.update(seq_len=32, global_batch=8, max_steps=4, warmup_steps=2, eval_every=0,
                     eval_batches=1, log_every=1, checkpoint_every=2, tensorboard=False)
      c.mesh.update(data=2, fsdp=2, tensor=1)
      c.multihost = True
      return c
''')


def _free_port() -> int:
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_cpu_run_trains_checkpoints_and_resumes(tmp_path):
  """2 processes x 2 CPU devices (jax.distributed over localhost): per-host data shards, global
  batches from process-local rows, one checkpoint holding both hosts' iterator states, resume."""
  config = tmp_path / 'mh.py'
  config.write_text(_MULTIHOST_CONFIG)
  workdir = tmp_path / 'wd'

  def launch(*extra):
    port = _free_port()
    procs = []
    for pid in range(2):
      env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_COORDINATOR_ADDRESS=f'localhost:{port}',
                 JAX_NUM_PROCESSES='2', JAX_PROCESS_ID=str(pid),
                 XLA_FLAGS='--xla_force_host_platform_device_count=2')
      procs.append(subprocess.Popen(
          [sys.executable, '-m', 'aira_jax.train', f'--config={config}', f'--workdir={workdir}',
           *extra], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
      assert p.returncode == 0, err[-3000:]
    return [err for _, err in outs]

  launch()
  with open(workdir / 'checkpoints' / '4' / 'data' / 'metadata', encoding='utf-8') as f:
    data = json.load(f)
  assert [it['pipeline']['shard_index'] for it in data['iterators']] == [0, 1]
  first = json.load(open(workdir / 'summary.json', encoding='utf-8'))
  assert first['steps'] == 4 and first['devices'] == 4
  logs = launch('--config.train.max_steps=6')
  assert all('Resuming from step 4' in err for err in logs)
  again = json.load(open(workdir / 'summary.json', encoding='utf-8'))
  assert again['steps'] == 6 and again['resumed_from_step'] == 4
