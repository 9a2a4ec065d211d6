"""`python -m aira_jax.check`: progress lines, the JSON verdict as the last line, exit status 0 / 1 / 2; the
sandbox's limits (a hang and a memory bomb are killed, the parent answers)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from aira_jax import check
from aira_jax.discovery.gates import GateSettings
from aira_jax.discovery.sandbox import check_program

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROGRAMS = ROOT / 'tests' / 'programs'
ATTENTION = ROOT / 'aira_jax' / 'models' / 'baselines' / 'attention.py'


def _cli(*args: str, timeout: float = 300) -> tuple[int, list[str], dict]:
  env = {**os.environ, 'PYTHONPATH': str(ROOT)}
  proc = subprocess.run([sys.executable, '-m', 'aira_jax.check', *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)
  lines = [line for line in proc.stdout.splitlines() if line.strip()]
  assert lines, proc.stderr[-2000:]
  return proc.returncode, lines, json.loads(lines[-1])


def test_accepts_a_good_program_with_progress_and_json_last_line():
  rc, lines, verdict = _cli(f'--design={PROGRAMS / "good_swa.py"}')
  assert rc == 0, verdict
  assert verdict['ok'] is True and verdict['gate'] is None and isinstance(verdict['reason'], str)
  assert any(line.startswith('[1/9] static') for line in lines)
  assert any(line.startswith('[9/9] train') for line in lines)
  assert [g['gate'] for g in verdict['gates']][-1] == 'train'


def test_rejects_nan_output_at_forward():
  rc, lines, verdict = _cli(f'--design={PROGRAMS / "nan_output.py"}')
  assert rc == 1
  assert (verdict['ok'], verdict['gate']) == (False, 'forward')
  assert 'non-finite' in verdict['reason']
  assert any('REJECTED' in line for line in lines[:-1])


def test_json_only_prints_exactly_the_verdict():
  rc, lines, verdict = _cli(f'--design={PROGRAMS / "import_os.py"}', '--json_only')
  assert rc == 1 and len(lines) == 1
  assert verdict['gate'] == 'static' and '`import os`' in verdict['reason']


def test_allow_quadratic_flag_decides_the_attention_baseline():
  rc, _, verdict = _cli(f'--design={ATTENTION}', '--config.stop_after=cost', '--json_only')
  assert (rc, verdict['gate']) == (1, 'cost') and 'T^2' in verdict['reason']
  rc, _, verdict = _cli(f'--design={ATTENTION}', '--config.stop_after=cost', '--allow_quadratic', '--json_only')
  assert rc == 0 and verdict['ok'] is True


def test_a_hanging_program_is_killed_at_the_gate_timeout():
  rc, _, verdict = _cli(f'--design={PROGRAMS / "infinite_loop.py"}', '--config.gate_timeout_s=8', '--json_only')
  assert rc == 1 and verdict['gate'] == 'load'
  assert 'timed out' in verdict['reason'] and 'infinite loop' in verdict['reason']


def test_a_memory_bomb_is_killed_at_the_limit():
  rc, _, verdict = _cli(f'--design={PROGRAMS / "memory_bomb.py"}', '--config.memory_limit_mb=1024', '--json_only')
  assert rc == 1 and verdict['gate'] == 'load'
  assert 'memory limit (1024 MB' in verdict['reason']
  assert verdict['details']['peak_rss_mb'] >= 1024


def test_whole_check_timeout_through_the_api():
  source = (PROGRAMS / 'infinite_loop.py').read_text()
  verdict = check_program(source, 'hang', GateSettings(timeout_s=10))
  assert not verdict.ok and verdict.gate == 'load'
  assert 'the check ran longer than 10 s' in verdict.reason
  assert verdict.details['returncode'] == -9


@pytest.mark.parametrize('args,needle', [
    ([], '--design=PATH is required'),
    (['--design=/nonexistent/x.py'], 'does not exist'),
    (['--design={good}', '--bogus'], 'Unknown command line flag'),
    (['--design={good}', '--config.seq_len=abc'], 'invalid literal'),
    (['--design={good}', '--config.no_such_field=1'], 'does not exist'),
    (['--design={good}', '--config=/nonexistent/cfg.py'], 'bad check config'),
    (['--design={good}', '--config.seq_len=4'], 'seq_len must be >= 8'),
    (['--design={good}', 'extra'], 'unexpected arguments'),
])
def test_usage_errors_exit_2(args, needle, capsys):
  args = [a.format(good=PROGRAMS / 'good_swa.py') for a in args]
  assert check.main(['aira_jax.check', *args]) == 2
  out = capsys.readouterr()
  assert needle in out.err
  assert json.loads(out.out.strip().splitlines()[-1])['ok'] is False


def test_flags_override_the_config():
  flags = check._Flags(['aira_jax.check', '--design=x.py', '--allow_quadratic', '--target_params=123456',
                        '--auto_fit', '--config.seq_len=256', '--config.cost_seq_lens=(1024, 4096)'])
  settings = check._settings(flags)
  assert (settings.allow_quadratic, settings.target_params, settings.auto_fit) == (True, 123456, True)
  assert settings.seq_len == 256 and settings.cost_seq_lens == (1024, 4096)
  defaults = check._settings(check._Flags(['aira_jax.check', '--design=x.py']))
  assert defaults == GateSettings().validate()


def test_unreadable_design_file_exits_2(tmp_path, capsys):
  bad = tmp_path / 'bad.py'
  bad.write_bytes(b'\xff\xfe\x00 not utf-8')
  assert check.main(['aira_jax.check', f'--design={bad}']) == 2
  assert 'cannot read design program' in capsys.readouterr().err


_EXITING = '''
import typing

import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, **kwargs):
    typing.sys.modules['os'].{call}
    self.proj = nnx.Linear(d_model, d_model, rngs=rngs)

  def __call__(self, x):
    return self.proj(x)
'''


@pytest.mark.parametrize('call,needle', [('_exit(3)', 'exited with status 3'), ('abort()', 'signal SIGABRT')])
def test_a_child_that_dies_still_gets_a_verdict(call, needle):
  """Static check off so the program reaches os; the parent reports the gate and the way the child ended."""
  verdict = check_program(_EXITING.format(call=call), 'dies', GateSettings(static_check=False, timeout_s=120))
  assert (verdict.ok, verdict.gate) == (False, 'load')
  assert needle in verdict.reason and 'stderr_tail' in verdict.details


def test_check_program_rejects_bad_arguments():
  with pytest.raises(ValueError, match='design name'):
    check_program('x = 1', None)
  assert check_program('import os', '../etc/x.y').gate == 'static'  # odd names are sanitised, not fatal
  with pytest.raises(ValueError, match='unknown field'):
    check_program('x = 1', 'ok', {'no_such_setting': 1})
