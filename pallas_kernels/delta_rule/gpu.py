"""Mosaic GPU kernels for the chunked delta rule: the gated kernels with the decay compiled out.

`gated=False` is a static flag of the kernel body (chunk_math.ChunkMath), so no exp, cumulative-decay or dg
work is traced, and no g tensor is copied in.
"""
from __future__ import annotations

from aira_jax.ops.dispatch import register_kernel
from pallas_kernels.gated_delta_rule import gpu as _gated


def chunk_delta_rule_gpu(q, k, v, beta, *, scale=None, initial_state=None, output_final_state=False,
                         chunk_size=_gated.CHUNK, interpret=None, scheme=None):
    """Delta rule on a Hopper GPU. interpret: plgpu.InterpretGPUParams() runs it on CPU for tests; scheme: see
    gated_delta_rule/gpu.py (chunked or fused)."""
    return _gated.chunk_gated_delta_rule_gpu(q, k, v, None, beta, scale=scale, initial_state=initial_state,
                                             output_final_state=output_final_state, chunk_size=chunk_size,
                                             interpret=interpret, scheme=scheme)


def applies(q, k, v, beta, **kwargs) -> bool:
    return _gated.applies(q, k, v, None, beta, **kwargs)


register_kernel("delta_rule", "gpu", chunk_delta_rule_gpu, applies)
