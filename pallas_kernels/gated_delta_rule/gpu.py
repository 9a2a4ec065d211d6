"""Mosaic GPU (Hopper) kernels for the chunked (gated) delta rule, forward and backward: the entry point.

Two schemes share gpu_common.py (wgmma through SMEM, value blocks, layouts) and chunk_math.py (the math, also
the TPU kernels'):
  * "chunked" (gpu_chunked.py, default): only the state recurrence runs in chunk order; W and U', outputs and
    gradients run one CTA per (head, chunk).
  * "fused" (gpu_fused.py): one sequential sweep per (batch, head, value block) does a chunk's whole math.
`scheme=` or the AIRA_GPU_DELTA_SCHEME environment variable picks one; bench/kernels.py times both.
Both read and write the op layout [B, T, H, D] in place (gpu_common.OpSlices); AIRA_GPU_STRIDED_TMA=0 runs them on
heads moved into the batch instead (common.call_heads_as_batch: contiguous windows, transposes around them).

Limits: every kernel's SMEM must fit gpu_common.SMEM_BUDGET (`applies` sizes them; tests/test_kernel_lowering.py
checks the largest accepted case against Mosaic's own count): bf16 head dims up to 128 (Dv in 64-column value
blocks; smaller dims zero-padded to 64), fp32 up to 64; anything else falls back to XLA. wgmma is Hopper-only.
"""
from __future__ import annotations

import functools
import os

import jax.numpy as jnp

from aira_jax.ops.dispatch import register_kernel
from pallas_kernels import common
from pallas_kernels.gated_delta_rule import chunk_math, gpu_chunked, gpu_fused, vjp
from pallas_kernels.gated_delta_rule.gpu_common import CHUNK, value_blocks  # noqa: F401  (re-exported)

GPU_HEAD_DIMS = (64, 128)  # smaller head dims are zero-padded to 64 by vjp.run
SCHEMES = ("chunked", "fused")
_MODULES = {"chunked": gpu_chunked, "fused": gpu_fused}
DEFAULT_SCHEME = os.environ.get("AIRA_GPU_DELTA_SCHEME", "chunked")


def _scheme(scheme: str | None) -> str:
    scheme = scheme or DEFAULT_SCHEME
    if scheme not in SCHEMES:
        raise ValueError(f"delta rule GPU kernel: unknown scheme {scheme!r}; choose from {SCHEMES} "
                         "(AIRA_GPU_DELTA_SCHEME)")
    return scheme


@functools.lru_cache(maxsize=None)
def _pair(gated: bool, scale: float, dtype, interpret, scheme: str) -> vjp.KernelPair:
    m = chunk_math.ChunkMath(gated=gated, scale=scale, mm_dtype=jnp.dtype(dtype))
    mod = _MODULES[scheme]
    return vjp.KernelPair(functools.partial(mod._forward, m=m, interpret=interpret),
                          functools.partial(mod._backward, m=m, interpret=interpret))


def chunk_gated_delta_rule_gpu(q, k, v, g, beta, *, scale=None, initial_state=None, output_final_state=False,
                               chunk_size=CHUNK, interpret=None, scheme=None):
    """Gated delta rule on a Hopper GPU (g=None: the plain delta rule, decay math compiled out).

    interpret: None on the GPU; plgpu.InterpretGPUParams() runs the same kernels on CPU for tests.
    scheme: "chunked" or "fused" (default DEFAULT_SCHEME, set by the AIRA_GPU_DELTA_SCHEME environment variable).
    """
    scheme = _scheme(scheme)
    make = lambda gated, sc, dt: _pair(gated, sc, dt, interpret, scheme)  # noqa: E731

    def run(q, k, v, g, beta, **kw):
        return vjp.run(make, q, k, v, g, beta, scale=scale, chunk_size=chunk_size, head_dims=GPU_HEAD_DIMS, **kw)
    if not common.strided_gpu_io():  # AIRA_GPU_STRIDED_TMA=0: heads as batch rows (contiguous windows)
        return common.call_heads_as_batch(run, q, k, v, (g, beta), initial_state=initial_state,
                                          output_final_state=output_final_state)
    return run(q, k, v, g, beta, initial_state=initial_state, output_final_state=output_final_state)


def fits_smem(gated: bool, dk: int, dv: int, dtype, scheme: str | None = None) -> bool:
    """Whether the scheme's kernels' SMEM for head dims (dk, dv) fits the budget (per value block)."""
    return _MODULES[_scheme(scheme)].fits_smem(gated, dk, dv, jnp.dtype(dtype))


def applies(q, k, v, g, beta, *, check_device=True, **kwargs) -> bool:
    if not vjp.applies(q, k, v, g, beta, head_dims=GPU_HEAD_DIMS, **kwargs):
        return False
    if check_device and not common.is_hopper():
        return False
    dk, dv = (common.kernel_head_dim(d, GPU_HEAD_DIMS) for d in (q.shape[-1], v.shape[-1]))
    return fits_smem(g is not None, dk, dv, jnp.dtype(q.dtype))


register_kernel("gated_delta_rule", "gpu", chunk_gated_delta_rule_gpu, applies)
