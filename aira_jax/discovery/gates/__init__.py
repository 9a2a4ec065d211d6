"""The Checker's gates for design programs, in order:

  1 static      import / builtin / escape policy on the source text (aira_jax.discovery.policy)
  2 load        load_program + instantiate the Mixer + build a tiny LM around it
  3 forward     [B, T, d] -> same shape and dtype, finite, with fp32 and bf16 parameters
  4 causality   no output position depends on a later input (gradients and perturbations)
  5 batch       samples do not influence each other; batch size does not matter
  6 cost        sub-quadratic in T (jaxpr FLOPs with scans unrolled + XLA cost/memory analysis)
  7 gradients   finite and non-zero for every parameter
  8 budget      total parameters within +-20% of a target (optional auto-fit of mlp_hidden)
  9 train       a few dozen AdamW steps on a fixed batch lower the loss

Importing this package does not import JAX (a parent process only builds settings and reads verdicts); the
gates themselves live in `aira_jax.discovery.gates.runner` (`run_gates`), which the sandbox child imports.
"""
from aira_jax.discovery.gates.config import GATE_NAMES, GateSettings, get_config, settings_from_config
from aira_jax.discovery.gates.verdict import GateVerdict, Verdict

__all__ = ['GATE_NAMES', 'GateSettings', 'GateVerdict', 'Verdict', 'get_config', 'run_gates',
           'settings_from_config']


def __getattr__(name):
  if name == 'run_gates':  # lazily: it imports JAX
    from aira_jax.discovery.gates.runner import run_gates
    return run_gates
  raise AttributeError(name)
