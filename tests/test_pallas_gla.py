"""Mosaic TPU and Mosaic GPU simple-GLA kernels (interpret mode on CPU) against the float32 recurrent oracle.

Forward, final state and every gradient (q, k, v, g, initial state) through the Pallas backward. bf16 runs are
compared with the oracle on the same bf16-rounded values (flash-linear-attention's convention), so the bar
measures the kernel's own error: relative RMS <= 6e-3 forward and <= 8e-3 for gradients.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import mosaic_gpu as plgpu
from jax.experimental.pallas import tpu as pltpu

from aira_jax import ops
from aira_jax.ops import dispatch
from pallas_kernels.simple_gla import gpu, recurrent_simple_gla, tpu
from tests.kernel_helpers import tpu_cost_estimates

TOL = {jnp.float32: (2e-5, 2e-5), jnp.bfloat16: (6e-3, 8e-3)}  # (forward, gradients)
INTERPRET = pltpu.InterpretParams()


def rel_rms(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-30))


def fresh_seed():
    return int(np.random.SeedSequence().entropy % (2**31))


def make_inputs(seed, b, t, h, dk, dv, dtype, decay=0.5):
    ks = jax.random.split(jax.random.PRNGKey(seed), 7)
    cast = lambda x: x.astype(dtype).astype(jnp.float32)  # noqa: E731 - values exactly representable in dtype
    return dict(
        q=cast(jax.random.normal(ks[0], (b, t, h, dk))),
        k=cast(ops.l2norm(jax.random.normal(ks[1], (b, t, h, dk)))),
        v=cast(jax.random.normal(ks[2], (b, t, h, dv))),
        g=-jax.nn.softplus(jax.random.normal(ks[3], (b, t, h))) * decay,
        s0=0.5 * jax.random.normal(ks[4], (b, h, dk, dv)),
        do=jax.random.normal(ks[5], (b, t, h, dv)),
        dsf=jax.random.normal(ks[6], (b, h, dk, dv)),
    )


def kernel(*args, **kw):
    return tpu.simple_gla_tpu(*args, interpret=INTERPRET, **kw)


def gpu_kernel(*args, **kw):
    # The Mosaic GPU kernels (wgmma, TMA copies, barriers) under the GPU interpreter.
    return gpu.simple_gla_gpu(*args, interpret=plgpu.InterpretGPUParams(), **kw)


def values_and_grads(fn, d, dtype, with_state):
    def loss(q, k, v, g, s0):
        if with_state:
            o, s = fn(q, k, v, g, initial_state=s0, output_final_state=True)
            return jnp.sum(o.astype(jnp.float32) * d["do"]) + jnp.sum(s * d["dsf"]), (o, s)
        o = fn(q, k, v, g)
        return jnp.sum(o.astype(jnp.float32) * d["do"]), (o, None)

    args = [d["q"].astype(dtype), d["k"].astype(dtype), d["v"].astype(dtype), d["g"], d["s0"]]
    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4), has_aux=True)(*args)
    return out, grads


def check_against_oracle(dtype, *, b, t, h, dk, dv, with_state, decay=0.5, fn=kernel):
    seed = fresh_seed()
    d = make_inputs(seed, b, t, h, dk, dv, dtype, decay)
    (o, s), grads = values_and_grads(fn, d, dtype, with_state)
    (o_ref, s_ref), grads_ref = values_and_grads(recurrent_simple_gla, d, jnp.float32, with_state)
    fwd_tol, grad_tol = TOL[dtype]
    assert o.dtype == dtype and o.shape == (b, t, h, dv), f"seed {seed}: output {o.dtype} {o.shape}"
    err = rel_rms(o, o_ref)
    assert err <= fwd_tol, f"seed {seed}: forward rel RMS {err:.2e} > {fwd_tol}"
    if with_state:
        assert s.dtype == jnp.float32 and s.shape == (b, h, dk, dv)
        err = rel_rms(s, s_ref)
        assert err <= fwd_tol, f"seed {seed}: final state rel RMS {err:.2e} > {fwd_tol}"
    names = ("q", "k", "v", "g", "initial_state") if with_state else ("q", "k", "v", "g")
    for name, ga, gb in zip(names, grads, grads_ref):
        assert np.all(np.isfinite(np.asarray(ga, np.float32))), f"seed {seed}: non-finite d{name}"
        err = rel_rms(ga, gb)
        assert err <= grad_tol, f"seed {seed}: gradient of {name} rel RMS {err:.2e} > {grad_tol}"


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["fp32", "bf16"])
def test_ragged_t_with_states_d64(dtype):
    # T = 150: three chunks, the last one padded; initial state in, final state out, all gradients.
    check_against_oracle(dtype, b=1, t=150, h=2, dk=64, dv=64, with_state=True)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["fp32", "bf16"])
def test_d128_without_states(dtype):
    check_against_oracle(dtype, b=2, t=128, h=1, dk=128, dv=128, with_state=False)


def test_mixed_head_dims_and_strong_decay_bf16():
    # dk != dv, and decays strong enough that exp(cumsum) underflows inside a chunk: no inf/nan anywhere.
    check_against_oracle(jnp.bfloat16, b=1, t=100, h=1, dk=64, dv=128, with_state=True, decay=8.0)


def test_gpu_kernels_interpreted_ragged_t_with_states_d64():
    # Two batches of three heads: each program finds its own strided windows of the op layout [B, T, H, D].
    check_against_oracle(jnp.bfloat16, b=2, t=150, h=3, dk=64, dv=64, with_state=True, fn=gpu_kernel)


def test_head_dims_below_the_tile_are_zero_padded_exactly():
    # 48 -> 64 on the TPU path (Dk) with Dv 32 native; 32 -> 64 on the GPU path (exploration-scale heads).
    check_against_oracle(jnp.bfloat16, b=1, t=90, h=2, dk=48, dv=32, with_state=True)
    check_against_oracle(jnp.bfloat16, b=1, t=70, h=1, dk=32, dv=32, with_state=True, fn=gpu_kernel)


def test_gpu_kernels_with_heads_as_batch(monkeypatch):
    monkeypatch.setenv("AIRA_GPU_STRIDED_TMA", "0")  # heads moved into the batch: contiguous TMA windows
    check_against_oracle(jnp.bfloat16, b=2, t=70, h=2, dk=64, dv=64, with_state=True, fn=gpu_kernel)


def test_gpu_kernels_interpreted_d128_two_value_blocks():
    check_against_oracle(jnp.bfloat16, b=1, t=128, h=2, dk=128, dv=128, with_state=False, fn=gpu_kernel)


def test_gpu_registration_takes_bf16_up_to_128_only():
    entry = dispatch._registry[("simple_gla", "gpu")]
    assert entry.fn is gpu.simple_gla_gpu
    g = jnp.zeros((1, 70, 2))
    for d, ok in ((64, True), (128, True), (256, False), (32, True)):  # 32 is zero-padded to 64
        x = jnp.zeros((1, 70, 2, d), jnp.bfloat16)
        assert entry.applies(x, x, x, g, chunk_size=64, check_device=False) is ok, d
    x = jnp.zeros((1, 70, 2, 64), jnp.float32)  # fp32 wgmma would be tf32: falls back to XLA
    assert not entry.applies(x, x, x, g, chunk_size=64, check_device=False)
    x = jnp.zeros((1, 70, 2, 64), jnp.bfloat16)
    from pallas_kernels import common
    assert entry.applies(x, x, x, g, chunk_size=64) is common.is_hopper()  # wgmma needs a Hopper GPU


def test_state_passing_splits_exactly():
    seed = fresh_seed()
    d = make_inputs(seed, 1, 170, 2, 64, 64, jnp.float32)
    args = (d["q"], d["k"], d["v"], d["g"])
    o_full, s_full = kernel(*args, output_final_state=True)
    o1, s1 = kernel(*(a[:, :100] for a in args), output_final_state=True)
    o2, s2 = kernel(*(a[:, 100:] for a in args), initial_state=s1, output_final_state=True)
    assert rel_rms(jnp.concatenate([o1, o2], axis=1), o_full) <= 2e-5, f"seed {seed}"
    assert rel_rms(s2, s_full) <= 2e-5, f"seed {seed}"


@pytest.mark.parametrize("d,dtype", [(64, jnp.bfloat16), (128, jnp.float32)])
def test_tpu_kernels_lower_to_mosaic_with_their_cost(d, dtype):
    """Under differentiation the forward, the states pass and the backward lower to Mosaic TPU (no TPU needed),
    each with a cost estimate for XLA's scheduler that matches its work: per chunk the forward does the C x C x D
    matmuls Q K^T and A V and the C x D x D matmuls Q S and K^T V; the states pass only K^T V (and forms no C x C
    decay matrix: C + 1 exps per chunk, not C^2)."""
    t, h, c = 256, 2, 64
    q = jnp.zeros((1, t, h, d), dtype)
    g = jnp.zeros((1, t, h))

    def loss(q, k, v, g, s0):
        o, s = tpu.simple_gla_tpu(q, k, v, g, initial_state=s0, output_final_state=True)
        return jnp.sum(o.astype(jnp.float32)) + jnp.sum(s)

    text = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4))).trace(q, q, q, g, jnp.zeros((1, h, d, d))).lower(
        lowering_platforms=("tpu",)).as_text()
    assert text.count("tpu_custom_call") == 3
    states, fwd, bwd = sorted(tpu_cost_estimates(text), key=lambda e: e["flops"])
    steps, chunks = h * t // c, t // c
    assert 1.0 <= fwd["flops"] / (steps * (2 * 2 * c * c * d + 2 * 2 * c * d * d)) <= 1.1, fwd
    assert 1.0 <= states["flops"] / (steps * 2 * c * d * d) <= 1.1, states
    assert 1.5 * fwd["flops"] <= bwd["flops"] <= 3 * fwd["flops"], (fwd, bwd)
    assert fwd["transcendentals"] == steps * (c * c + 2 * c + 1), fwd  # D, exp(b) and the two state decays
    assert states["transcendentals"] == steps * (c + 1), states
    state, decays = h * d * d * 4, 2 * t * h * 4  # the decays come in as a column and a row
    assert fwd["bytes_accessed"] == 4 * q.size * q.dtype.itemsize + decays + 2 * state, fwd
    assert states["bytes_accessed"] == 2 * q.size * q.dtype.itemsize + decays + (1 + chunks) * state, states


def test_registered_for_tpu_and_applies_rejects_what_it_cannot_do():
    entry = dispatch._registry[("simple_gla", "tpu")]
    assert entry.fn is tpu.simple_gla_tpu
    x = jnp.zeros((1, 70, 2, 64), jnp.bfloat16)
    g = jnp.zeros((1, 70, 2))
    assert entry.applies(x, x, x, g, chunk_size=64)
    assert entry.applies(x, x, jnp.zeros((1, 70, 2, 128), jnp.bfloat16), g, chunk_size=64)
    assert not entry.applies(x, x, x, g, chunk_size=32)  # only the chunk it was tested with
    odd = jnp.zeros((1, 70, 2, 300), jnp.bfloat16)
    assert not entry.applies(odd, odd, odd, g, chunk_size=64)  # above the largest tile (smaller ones are padded)
    half = x.astype(jnp.float16)
    assert not entry.applies(half, half, half, g, chunk_size=64)
    assert not entry.applies(x, x.astype(jnp.float32), x, g, chunk_size=64)  # mixed dtypes
    # On this CPU backend the kernel is not chosen automatically, and forcing it names the problem.
    with pytest.raises(NotImplementedError, match="simple_gla"):
        ops.simple_gla(odd, odd, odd, g, impl="kernel")


def test_bad_shapes_are_named():
    x = jnp.zeros((1, 64, 2, 64))
    with pytest.raises(ValueError, match="initial_state"):
        kernel(x, x, x, jnp.zeros((1, 64, 2)), initial_state=jnp.zeros((1, 2, 64, 32)))
    with pytest.raises(ValueError, match="g must be"):
        kernel(x, x, x, jnp.zeros((1, 64, 3)))
