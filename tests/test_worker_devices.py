"""Each training worker of one machine gets its own share of the GPUs (counted without starting CUDA)."""
import sys
import time

import pytest

from aira_jax.discovery import devices
from aira_jax.discovery.loop_workers import WorkerPool


def test_visible_gpus_from_the_environment_or_the_device_files(tmp_path):
  assert devices.visible_gpus({'CUDA_VISIBLE_DEVICES': '0,1,2,3'}) == ['0', '1', '2', '3']
  assert devices.visible_gpus({'CUDA_VISIBLE_DEVICES': 'GPU-aa, GPU-bb'}) == ['GPU-aa', 'GPU-bb']
  assert devices.visible_gpus({'CUDA_VISIBLE_DEVICES': '-1'}) == []
  assert devices.visible_gpus({'CUDA_VISIBLE_DEVICES': '2,-1,3'}) == ['2']  # CUDA stops at the invalid entry
  assert devices.visible_gpus({'CUDA_VISIBLE_DEVICES': ''}) == []
  for name in ('nvidia10', 'nvidia2', 'nvidia0', 'nvidiactl', 'nvidia-uvm', 'null'):
    (tmp_path / name).write_text('')
  assert devices.visible_gpus({}, dev_dir=str(tmp_path)) == ['0', '2', '10']
  assert devices.visible_gpus({}, dev_dir=str(tmp_path / 'absent')) == []


@pytest.mark.parametrize('gpus,count,expected', [
    (8, 2, [{'CUDA_VISIBLE_DEVICES': '0,1,2,3'}, {'CUDA_VISIBLE_DEVICES': '4,5,6,7'}]),
    (3, 2, [{'CUDA_VISIBLE_DEVICES': '0'}, {'CUDA_VISIBLE_DEVICES': '1'}]),  # equal shares; GPU 2 idle
    (1, 3, [{'CUDA_VISIBLE_DEVICES': '0', 'XLA_PYTHON_CLIENT_MEM_FRACTION': '0.300'}] * 3),
    (2, 3, [{'CUDA_VISIBLE_DEVICES': '0', 'XLA_PYTHON_CLIENT_MEM_FRACTION': '0.450'},
            {'CUDA_VISIBLE_DEVICES': '1', 'XLA_PYTHON_CLIENT_MEM_FRACTION': '0.900'},
            {'CUDA_VISIBLE_DEVICES': '0', 'XLA_PYTHON_CLIENT_MEM_FRACTION': '0.450'}]),
    (4, 1, [{}]),  # one worker: it sees everything
    (0, 4, [{}] * 4),  # no GPU: nothing to split
])
def test_worker_shares(gpus, count, expected):
  names = [str(i) for i in range(gpus)]
  assert [devices.worker_env(i, count, names, {}) for i in range(count)] == expected


def test_the_users_memory_settings_and_the_switch_are_respected():
  assert devices.worker_env(1, 2, ['0'], {'XLA_PYTHON_CLIENT_PREALLOCATE': 'false'}) == {'CUDA_VISIBLE_DEVICES': '0'}
  assert devices.worker_env(0, 2, ['0', '1'], {'AIRA_SPLIT_GPUS': '0'}) == {}
  with pytest.raises(ValueError, match='worker index 2'):
    devices.worker_env(2, 2, ['0', '1'], {})
  plan = {'worker-0': devices.worker_env(0, 2, list('012'), {}), 'worker-1': devices.worker_env(1, 2, list('012'), {})}
  assert devices.describe(plan, list('012')) == 'worker-0: GPU 0; worker-1: GPU 1; idle: GPU 2'
  assert devices.describe({'worker-0': {}}, []) == 'no GPUs visible: workers share the CPU'


class _EnvPool(WorkerPool):
  """Workers that only print the GPU variables they were started with."""

  def command(self, worker_id):
    return [sys.executable, '-c', 'import os; print(os.environ.get("CUDA_VISIBLE_DEVICES"), '
            'os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"), os.environ.get("AIRA_STORE_URL"))']


def test_the_pool_starts_each_worker_on_its_share(monkeypatch, tmp_path):
  monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
  for name in devices.MEMORY_ENV:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(devices, 'visible_gpus', lambda: ['0', '1', '2', '3'])
  pool = _EnvPool(2, store_url='sqlite:///x.sqlite', config_path='c.py', log_dir=str(tmp_path))
  pool.ensure()
  deadline = time.monotonic() + 60
  while pool.alive() and time.monotonic() < deadline:
    time.sleep(0.1)
  logs = {w: (tmp_path / f'{w}.log').read_text().strip() for w in ('worker-0', 'worker-1')}
  assert logs == {'worker-0': '0,1 None sqlite:///x.sqlite', 'worker-1': '2,3 None sqlite:///x.sqlite'}


def test_a_gate_child_on_a_gpu_takes_one_gpu_and_reserves_no_memory(monkeypatch, tmp_path):
  """Gates run beside the training workers on the same GPUs: one device (the last, idle when the workers leave a
  remainder) and memory on demand, not 75% of it at start. On the CPU nothing of the kind is set."""
  from aira_jax.discovery import sandbox
  from aira_jax.discovery.gates.config import GateSettings
  for name in ('CUDA_VISIBLE_DEVICES', devices.SPLIT_ENV, *devices.MEMORY_ENV):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '3,5,7')
  env = sandbox.child_env(str(tmp_path), GateSettings(platform=''))
  assert env['CUDA_VISIBLE_DEVICES'] == '7' and env['XLA_PYTHON_CLIENT_PREALLOCATE'] == 'false'
  cpu = sandbox.child_env(str(tmp_path), GateSettings())
  assert 'CUDA_VISIBLE_DEVICES' not in cpu and 'XLA_PYTHON_CLIENT_PREALLOCATE' not in cpu
  monkeypatch.setenv('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.2')  # the caller's own memory settings are kept
  env = sandbox.child_env(str(tmp_path), GateSettings(platform='cuda'))
  assert env['XLA_PYTHON_CLIENT_MEM_FRACTION'] == '0.2' and 'XLA_PYTHON_CLIENT_PREALLOCATE' not in env
  monkeypatch.setenv(devices.SPLIT_ENV, '0')  # no planning: the caller's devices as they are
  assert sandbox.child_env(str(tmp_path), GateSettings(platform=''))['CUDA_VISIBLE_DEVICES'] == '3,5,7'
  assert sandbox.gate_device_env({'CUDA_VISIBLE_DEVICES': ''}) == {'CUDA_VISIBLE_DEVICES': '',
                                                                  'XLA_PYTHON_CLIENT_PREALLOCATE': 'false'}
