"""The design-program policy: the static check (fast, no JAX) and the runtime guard in the sandbox child."""
import pathlib
import textwrap

import pytest

from aira_jax.discovery import policy, runtime_guard
from aira_jax.discovery.gates import GateSettings
from aira_jax.discovery.sandbox import check_program, child_env
from aira_jax.models import BASELINES, baseline_source

PROGRAMS = pathlib.Path(__file__).parent / 'programs'


def _expect(path: pathlib.Path) -> str:
  return path.read_text().splitlines()[0].split('expect:')[1].strip()


def _violations(src: str) -> list[str]:
  return [str(v) for v in policy.check_source(textwrap.dedent(src))]


@pytest.mark.parametrize('name', BASELINES)
def test_baselines_pass_static_policy(name):
  assert policy.check_source(baseline_source(name)) == []


@pytest.mark.parametrize('path', sorted(p.name for p in PROGRAMS.glob('*.py') if _expect(p) != 'static'))
def test_non_policy_programs_pass_static_policy(path):
  """Programs planted for later gates must not be stopped by the policy (else those gates go untested)."""
  assert policy.check_source((PROGRAMS / path).read_text()) == []


@pytest.mark.parametrize('path,needle', [
    ('import_os.py', '`import os`'),
    ('import_subprocess.py', '`import subprocess`'),
    ('file_open.py', '`open`'),
    ('socket_dunder_import.py', '`__import__`'),
    ('socket_getattr.py', "getattr(..., 'sys')"),
    ('subprocess_via_typing.py', '`.sys`'),
    ('thread_spawn.py', '`.sys`'),
    ('dunder_escape.py', '`.__subclasses__`'),
])
def test_planted_policy_programs_rejected_with_reason(path, needle):
  assert _expect(PROGRAMS / path) == 'static'
  found = [str(v) for v in policy.check_source((PROGRAMS / path).read_text())]
  assert any(needle in v for v in found), found
  assert all(v.startswith('line ') for v in found)


ALLOWED = [
    'import jax\nimport jax.numpy as jnp\nfrom jax import lax',
    'from flax import nnx\nimport einops\nimport numpy as np\nimport math, functools, typing, dataclasses',
    'from aira_jax import ops',
    'import aira_jax.ops as ops',
    'from aira_jax.ops import attention, delta_rule',
    'from __future__ import annotations\nfrom functools import partial\nfrom typing import Any',
    "class M:\n  def f(self, i):\n    return getattr(self, f'layer_{i}'), hasattr(self, 'scale')",
    "import numpy as np\nx = np.arange(4).reshape(2, 2)",
    'import jax\ny = jax.lax.scan\nz = jax.nn.softmax',
    'def f(self):\n  super().__init__()\n  return type(self).__name__',
    'def f(self, input):\n  return input * 2',  # a parameter may shadow a harmless builtin
    'class M:\n  def f(self):\n    self.signal = 1\n    return self.signal + self.io',  # own attributes
]


@pytest.mark.parametrize('src', ALLOWED)
def test_allowed_code(src):
  assert _violations(src) == []


FORBIDDEN = [
    ('import os', 'not an allowed import'),
    ('from os import path', 'not an allowed import'),
    ('import aira_jax.models', 'aira_jax.ops'),
    ('from aira_jax import models', 'only `ops`'),
    ('import aira_jax.ops', 'binds the whole'),
    ('from aira_jax.ops import dispatch', 'not part of the ops API'),
    ('from . import x', 'relative import'),
    ('from jax import *', 'import names explicitly'),
    ('from jax import config', 'this name does I/O'),
    ("import jax\njax.config.update('jax_enable_x64', True)", 'jax.config'),
    ('import jax\njax.profiler.start_trace("/tmp/x")', 'jax.profiler'),
    ("import numpy as np\nnp.load('x.npy')", 'numpy.load'),
    ("import jax.numpy as jnp\njnp.save('x', 1)", 'jax.numpy.save'),
    ('import numpy.ctypeslib', 'this module does I/O'),
    ('import jax\nx = jax._src.core', 'private'),
    ('import jax._src.core', 'private'),
    ('import typing\ntyping.sys.exit()', '`.sys`'),
    ('import typing\nt = typing\nt.sys.exit()', '`.sys`'),
    ('def f(open=open):\n  return open', '`open`'),
    ("eval('1 + 1')", '`eval`'),
    ("exec('x = 1')", '`exec`'),
    ("compile('1', 'f', 'eval')", '`compile`'),
    ('globals()', '`globals`'),
    ('locals()', '`locals`'),
    ('vars(object)', '`vars`'),
    ('input()', '`input`'),
    ('breakpoint()', '`breakpoint`'),
    ("__builtins__['open']", '`__builtins__`'),
    ('f = lambda: 0\nf.__globals__', '`.__globals__`'),
    ('f = lambda: 0\nf.__code__', '`.__code__`'),
    ('object.__subclasses__()', '`.__subclasses__`'),
    ('def f(x, name):\n  return getattr(x, name)', 'computed attribute name'),
    ("getattr(object, '__subclasses__')", "'__subclasses__'"),
    ("getattr(object, f'{1}__class__')", 'computed attribute name'),
    ('g = getattr', 'used as a value'),
    ("'{0.__class__}'.format(1)", 'format string'),
    ('import jax.numpy as jnp\njnp.cumsum = None', 'may not patch'),
    ("import jax\nsetattr(jax, 'jit', None)", 'may not patch'),
    ('x = memoryview(b"ab")', '`memoryview`'),
    ('match 1:\n  case int(__class__=c):\n    pass', 'private attributes'),
]


@pytest.mark.parametrize('src,needle', FORBIDDEN)
def test_forbidden_code(src, needle):
  found = _violations(src)
  assert any(needle in v for v in found), (src, found)


def test_syntax_error_names_the_line():
  (v,) = policy.check_source('x = 1\ndef f(:\n  pass\n')
  assert v.lineno == 2 and 'syntax error' in v.what


def test_oversized_and_non_text_sources_rejected():
  assert policy.check_source('x = 1\n' * 50_000)
  assert policy.check_source(b'import jax')


def test_policy_reason_lists_violations_and_counts_the_rest():
  violations = policy.check_source('import os\nimport sys\n' + 'eval("1")\n' * 10)
  text = policy.policy_reason(violations, limit=3)
  assert 'line 1: `import os`' in text and '(+9 more)' in text


def test_child_env_is_scrubbed(monkeypatch, tmp_path):
  monkeypatch.setenv('OPENAI_API_KEY', 'sk-secret')
  monkeypatch.setenv('HTTPS_PROXY', 'http://proxy:3128')
  monkeypatch.setenv('AIRA_JAX_OPS_IMPL', 'xla')
  env = child_env(str(tmp_path), GateSettings())
  assert set(env) <= {'PATH', 'HOME', 'TMPDIR', 'PYTHONPATH', 'JAX_PLATFORMS', 'LANG', 'XLA_FLAGS',
                      'PYTHONDONTWRITEBYTECODE', 'PYTHONHASHSEED', 'PYTHONNOUSERSITE', 'AIRA_JAX_OPS_IMPL'}
  assert env['HOME'] == str(tmp_path) and env['JAX_PLATFORMS'] == 'cpu'
  assert 'sk-secret' not in ''.join(env.values()) and 'proxy' not in ''.join(env.values())


def test_gates_judge_the_design_with_the_xla_ops_unless_told_otherwise(monkeypatch, tmp_path):
  """The gate child runs the XLA ops by default (a Pallas kernel that fails on this machine must not reject a
  design, and XLA's cost analysis sees nothing inside a kernel); ops_impl or the caller's variable change it."""
  monkeypatch.delenv('AIRA_JAX_OPS_IMPL', raising=False)
  assert child_env(str(tmp_path), GateSettings())['AIRA_JAX_OPS_IMPL'] == 'xla'
  assert child_env(str(tmp_path), GateSettings(ops_impl='auto'))['AIRA_JAX_OPS_IMPL'] == 'auto'
  monkeypatch.setenv('AIRA_JAX_OPS_IMPL', 'kernel')
  assert child_env(str(tmp_path), GateSettings())['AIRA_JAX_OPS_IMPL'] == 'kernel'
  with pytest.raises(ValueError, match='ops_impl must be one of'):
    GateSettings(ops_impl='pallas').validate()


# ------------------------------------------------------------------ runtime guard (static check switched off)

_TEMPLATE = '''
import typing

import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, **kwargs):
    modules = typing.sys.modules
{body}
    self.proj = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)

  def __call__(self, x):
    return self.proj(jnp.cumsum(x, axis=1))
'''

_RUNTIME = {
    'open_write': ("    open({marker!r}, 'w').write('x')", 'open('),
    'open_read': ("    open('/etc/hostname').read()", "open('/etc/hostname')"),
    'os_open': ("    modules['os'].open({marker!r}, modules['os'].O_CREAT | modules['os'].O_WRONLY)", 'open('),
    'subprocess': ("    modules['subprocess'].run(['touch', {marker!r}])", 'subprocess.Popen'),
    'os_system': ("    modules['os'].system('touch ' + {marker!r})", 'os.system'),
    'socket': ("    modules['socket'].socket().connect(('127.0.0.1', 9))", 'socket.'),
    'thread': ("    modules['threading'].Thread(target=print).start()", '_thread.start_new_thread'),
    'dunder_import': ("    __import__('socket')", "import 'socket'"),
    'import_stmt': ('    import shutil', "import 'shutil'"),
    'exec': ('    exec({code!r})', 'compile'),
    'remove': ("    modules['os'].remove({marker!r})", 'os.remove'),
}


@pytest.mark.parametrize('case', sorted(_RUNTIME))
def test_runtime_guard_refuses_and_reports(case, tmp_path):
  """With the static gate off, the child's audit hook / import hook must refuse and the gate name it."""
  marker = str(tmp_path / 'pwned')
  if case == 'remove':
    pathlib.Path(marker).write_text('keep me')
  body, needle = _RUNTIME[case]
  source = _TEMPLATE.format(body=body.format(marker=marker, code=f'open({marker!r}, "w")'))
  verdict = check_program(source, f'guard_{case}', GateSettings(static_check=False, stop_after='load',
                                                                timeout_s=120))
  assert not verdict.ok and verdict.gate == 'load', verdict.to_dict()
  assert needle in verdict.reason and 'policy' in verdict.reason, verdict.reason
  if case == 'remove':
    assert pathlib.Path(marker).read_text() == 'keep me'
  else:
    assert not pathlib.Path(marker).exists()


def test_child_environment_holds_no_secrets(monkeypatch):
  """End to end: a program that reads os.environ in the child finds neither the secret nor the caller's HOME."""
  monkeypatch.setenv('AIRA_TEST_SECRET', 'hunter2')
  monkeypatch.delenv('AIRA_JAX_OPS_IMPL', raising=False)
  body = ("    env = modules['os'].environ\n"
          "    raise ValueError('secret=' + str(env.get('AIRA_TEST_SECRET')) + ' home=' + env.get('HOME', ''))")
  verdict = check_program(_TEMPLATE.format(body=body), 'env_probe',
                          GateSettings(static_check=False, stop_after='load', timeout_s=120))
  assert verdict.gate == 'load' and 'secret=None' in verdict.reason
  assert 'hunter2' not in verdict.reason and 'aira_check_' in verdict.reason
  assert verdict.details['ops_impl'] == 'xla'  # the verdict says which op path judged the design


def test_children_inherit_the_callers_python_path(monkeypatch, tmp_path):
  """Packages that reach the caller through PYTHONPATH (pip --target, a side folder of wheels, a cluster's
  modules) reach the gate and training children too, after the project root."""
  import os
  from aira_jax.discovery import sandbox, training_run
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  extra = tmp_path / 'site'
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join([str(extra), root, '', str(extra)]))
  for env in (sandbox.child_env(str(tmp_path), GateSettings()), training_run.child_env(str(tmp_path), 'cpu')):
    assert env['PYTHONPATH'].split(os.pathsep) == [root, str(extra)]
  body = "    raise ValueError('path=' + modules['os'].environ.get('PYTHONPATH', ''))"
  verdict = check_program(_TEMPLATE.format(body=body), 'path_probe',
                          GateSettings(static_check=False, stop_after='load', timeout_s=120))
  assert verdict.gate == 'load' and str(extra) in verdict.reason, verdict.reason


_GUARDED_GPU_TRACE = '''
import json, sys
import jax, jax.numpy as jnp
from aira_jax import ops
from aira_jax.ops import dispatch
from aira_jax.discovery.policy import DESIGN_FILENAME_PREFIX
from aira_jax.discovery.runtime_guard import RuntimeGuard

jax.default_backend = lambda: 'gpu'  # as on a GPU machine: the kernels a guarded child must preload are the GPU ones
if sys.argv[1] == 'lazy':
  dispatch.preload_kernels = lambda: []  # the old order: kernels imported by the first op, under the guard
guard = RuntimeGuard.install()

def trace():
  q = jax.ShapeDtypeStruct((1, 128, 2, 64), jnp.bfloat16)
  beta = jax.ShapeDtypeStruct((1, 128, 2), jnp.bfloat16)
  with dispatch.lowering_for('gpu'):
    jax.jit(lambda q, beta: ops.delta_rule(q, q, q, beta)).trace(q, beta)

program = {'__file__': DESIGN_FILENAME_PREFIX + 'probe>', 'trace': trace}
exec(compile('def run():\\n  trace()\\n', program['__file__'], 'exec'), program)
try:
  program['run']()
  error = None
except Exception as e:
  error = repr(e)
print(json.dumps({'violations': guard.drain(), 'error': error,
                  'gpu_kernels': sorted(op for op, backend in dispatch._registry if backend == 'gpu')}))
'''


@pytest.mark.parametrize('order', ['lazy', 'preloaded'])
def test_backend_kernels_are_imported_before_the_guard(order):
  """On a GPU or TPU the first op a design calls imports the Pallas kernels. Under the guard, with the design's
  code on the stack, that import is refused (its file reads and directory scans), and every design would fail.
  RuntimeGuard.install imports them first; the 'lazy' case shows what that prevents."""
  import json
  import os
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': root}
  proc = subprocess.run([sys.executable, '-c', _GUARDED_GPU_TRACE, order], cwd=root, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  if order == 'lazy':
    assert out['violations'] and out['gpu_kernels'] == [], out
  else:
    assert out == {'violations': [], 'error': None,
                   'gpu_kernels': ['delta_rule', 'gated_delta_rule', 'simple_gla']}, out


def test_directory_listings_follow_the_rules_of_reads():
  """The import machinery lists library folders on a program's behalf (a namespace package, a lazy submodule
  import): allowed inside the library roots. The program listing a folder itself, or anything outside the
  libraries, is refused. (Called on an uninstalled guard: an installed audit hook is permanent.)"""
  import os
  guard = runtime_guard.RuntimeGuard()
  library = os.path.dirname(os.__file__)
  importer = {'__name__': 'importlib._test_finder', 'guard': guard}
  exec('def list_dir(path):\n  guard._audit("os.listdir", (path,))\n', importer)
  program = {'__file__': policy.DESIGN_FILENAME_PREFIX + 'lister>', 'guard': guard, 'importer': importer['list_dir']}
  exec(compile('def via_import(path):\n  importer(path)\n'
               'def direct(path):\n  guard._audit("os.scandir", (path,))\n', program['__file__'], 'exec'), program)
  program['via_import'](library)
  assert guard.drain() == []
  for call, path in ((program['via_import'], '/etc'), (program['direct'], library)):
    with pytest.raises(runtime_guard.PolicyError):
      call(path)
  refused = guard.drain()
  assert refused == ["os.listdir('/etc')", f'os.scandir({library!r})'], refused
