"""bench/overhead.py's table header says which op path ran and whether the Engineer retried without kernels."""
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load():
  spec = importlib.util.spec_from_file_location('bench_overhead', os.path.join(ROOT, 'bench', 'overhead.py'))
  mod = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = mod
  spec.loader.exec_module(mod)
  return mod


def test_ops_and_kernel_retry_lines():
  mod = _load()
  assert mod._ops_text(None) == 'not recorded'
  assert mod._ops_text({'kernels': ['delta_rule']}) == 'Pallas kernels for delta_rule'
  aside = mod._ops_text({'kernels': [], 'set_aside': {'delta_rule@gpu': 'runtime failure in experiment 1 (nan: x)'}})
  assert aside == 'XLA ops only; delta_rule@gpu SET ASIDE (runtime failure in experiment 1 (nan: x))'
  tested = mod._ops_text({'kernels': ['simple_gla'], 'set_aside': {'delta_rule@gpu': 'self-test: output 0 ...'},
                         'self_test': {'ok': {'simple_gla': 0.0051}, 'failed': {'delta_rule': 'x'}, 'seconds': 3.24}})
  assert tested == ('Pallas kernels for simple_gla; delta_rule@gpu SET ASIDE (self-test: output 0 ...); kernel '
                    'self-test vs XLA (3.2 s): passed, worst relative RMS simple_gla 0.0051; FAILED delta_rule')
  assert mod._retry_text(None) == ''
  line = mod._retry_text({'kernels': ['delta_rule'], 'failure': 'crash: JaxRuntimeError: illegal address',
                          'verdict': 'kernel fault'})
  assert line.startswith('KERNEL RETRY: the first run failed with the Pallas kernel(s) delta_rule in use (crash: ')
  assert 'kernel fault' in line and 'includes the failed run' in line
