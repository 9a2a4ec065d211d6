"""Mosaic TPU kernels for the chunked delta rule: the gated kernels with the decay compiled out.

`gated=False` is a static flag of the kernel body (chunk_math.ChunkMath), so no exp, cumulative-decay or dg
work is traced, and no zeros tensor is read for g.
"""
from __future__ import annotations

from aira_jax.ops.dispatch import register_kernel
from pallas_kernels.gated_delta_rule import tpu as _gated
from pallas_kernels.gated_delta_rule import vjp


def chunk_delta_rule_tpu(q, k, v, beta, *, scale=None, initial_state=None, output_final_state=False,
                         chunk_size=_gated.CHUNK, interpret=None):
    """Delta rule on TPU. interpret: None on a TPU; pltpu.InterpretParams() runs it on CPU for tests."""
    return _gated.chunk_gated_delta_rule_tpu(q, k, v, None, beta, scale=scale, initial_state=initial_state,
                                             output_final_state=output_final_state, chunk_size=chunk_size,
                                             interpret=interpret)


def applies(q, k, v, beta, **kwargs) -> bool:
    return vjp.applies(q, k, v, None, beta, **kwargs)


register_kernel("delta_rule", "tpu", chunk_delta_rule_tpu, applies)
