"""Named model scales: dict fragments that experiment configs merge into their model config.

'tiny'    CPU tests and smoke runs.
'explore' ASI-Arch's exploration scale: 8 layers, d_model 256, 8 heads; ~20M parameters with an untied
          32k vocabulary (~6.5M in the blocks, the rest embedding and head).
'verify'  ASI-Arch's verification scale: 24 layers, d_model 1024, 8 heads of 128 (fla's 340M delta-rule
          configs); ~0.37B parameters with attention and an untied 32k vocabulary.
"""
from __future__ import annotations

import copy
from typing import Any

SCALES: dict[str, dict[str, Any]] = {
    'tiny': {'d_model': 64, 'num_layers': 2, 'num_heads': 4, 'mlp_hidden': 0},
    'explore': {'d_model': 256, 'num_layers': 8, 'num_heads': 8, 'mlp_hidden': 0},
    'verify': {'d_model': 1024, 'num_layers': 24, 'num_heads': 8, 'mlp_hidden': 0},
}


def get_scale(name: str) -> dict[str, Any]:
  """A fresh copy of the named scale's model-config fragment."""
  if name not in SCALES:
    raise ValueError(f"unknown model scale '{name}'; expected one of {', '.join(SCALES)}")
  return copy.deepcopy(SCALES[name])
