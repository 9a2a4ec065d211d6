"""Pallas kernels of the (gated) delta rule against the float32 recurrent oracle, and kernel dispatch.

TPU kernels run on CPU under pltpu.InterpretParams (TPU semantics: sequential grid, VMEM scratch carried
across the "arbitrary" chunk axis). Mosaic GPU kernels run under the GPU interpreter where it can execute them
and for real on a Hopper GPU (marked gpu). Every test draws fresh inputs; the seed is in each failure message.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import mosaic_gpu as plgpu
from jax.experimental.pallas import tpu as pltpu

from aira_jax import ops
from aira_jax.ops import dispatch
from pallas_kernels import common
from pallas_kernels.delta_rule import gpu as dr_gpu
from pallas_kernels.delta_rule import tpu as dr_tpu
from pallas_kernels.gated_delta_rule import gpu as gdr_gpu
from pallas_kernels.gated_delta_rule import tpu as gdr_tpu
from pallas_kernels.gated_delta_rule.reference import recurrent_gated_delta_rule
from tests.kernel_helpers import tpu_cost_estimates

BF16_FWD, BF16_GRAD, FP32_TOL = 6e-3, 8e-3, 1e-4
INTERPRET = pltpu.InterpretParams()
GPU_INTERPRET = plgpu.InterpretGPUParams()


def rel_rms(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-30))


def fresh_seed() -> int:
    return int(np.random.SeedSequence().entropy % (2**31))


def make_inputs(seed, *, b, t, h, dk, dv, dtype, gated):
    ks = jax.random.split(jax.random.PRNGKey(seed), 8)
    d = dict(
        q=jax.random.normal(ks[0], (b, t, h, dk)).astype(dtype),
        k=ops.l2norm(jax.random.normal(ks[1], (b, t, h, dk))).astype(dtype),
        v=jax.random.normal(ks[2], (b, t, h, dv)).astype(dtype),
        g=-jax.nn.softplus(jax.random.normal(ks[3], (b, t, h))) * 0.5 if gated else None,
        beta=jax.nn.sigmoid(jax.random.normal(ks[4], (b, t, h))),
        s0=0.5 * jax.random.normal(ks[5], (b, h, dk, dv)),
        do=jax.random.normal(ks[6], (b, t, h, dv)),
        ds=jax.random.normal(ks[7], (b, h, dk, dv)),
    )
    return d


def check_against_oracle(kernel, seed, *, b, t, h, dk, dv, dtype, gated, with_state, fp32_tol=FP32_TOL):
    """Values, final state and gradients of every input (incl. the initial state, and through the final state)."""
    d = make_inputs(seed, b=b, t=t, h=h, dk=dk, dv=dv, dtype=dtype, gated=gated)
    names = ["q", "k", "v"] + (["g"] if gated else []) + ["beta"] + (["s0"] if with_state else [])
    f32 = jnp.float32

    def loss(fn, upcast, *xs):
        a = dict(zip(names, xs))
        qkv = [a[n].astype(f32) if upcast else a[n] for n in ("q", "k", "v")]
        o, s = fn(*qkv, *([a["g"]] if gated else []), a["beta"], initial_state=a.get("s0"),
                  output_final_state=True)
        return jnp.sum(o.astype(f32) * d["do"]) + jnp.sum(s * d["ds"]), (o, s)

    oracle = recurrent_gated_delta_rule if gated else (
        lambda q, k, v, beta, **kw: recurrent_gated_delta_rule(q, k, v, None, beta, **kw))
    args = [d[n] for n in names]
    grad = lambda fn, up: jax.value_and_grad(lambda *x: loss(fn, up, *x), argnums=tuple(range(len(args))),  # noqa
                                             has_aux=True)(*args)
    (_, (o, s)), gk = grad(kernel, False)
    (_, (o_ref, s_ref)), gr = grad(oracle, True)
    fwd_tol, grad_tol = (BF16_FWD, BF16_GRAD) if dtype == jnp.bfloat16 else (fp32_tol, fp32_tol)
    assert o.dtype == dtype and o.shape == d["v"].shape and s.dtype == f32
    where = f"seed={seed} dtype={jnp.dtype(dtype).name} t={t} dk={dk} dv={dv} gated={gated}"
    assert rel_rms(o, o_ref) <= fwd_tol, f"output: {rel_rms(o, o_ref):.2e} ({where})"
    assert rel_rms(s, s_ref) <= fwd_tol, f"final state: {rel_rms(s, s_ref):.2e} ({where})"
    for n, a, r in zip(names, gk, gr):
        assert a.shape == d[n].shape and a.dtype == d[n].dtype, f"d{n} shape/dtype ({where})"
        assert rel_rms(a, r) <= grad_tol, f"d{n}: {rel_rms(a, r):.2e} ({where})"


TPU_CASES = [  # (gated, dtype, b, t, h, dk, dv, with_state)
    (True, jnp.bfloat16, 2, 150, 1, 64, 64, True),    # ragged T, transposed (64-lane) layout
    (True, jnp.float32, 1, 100, 2, 128, 64, True),    # both layouts at once, Dk != Dv
    (False, jnp.bfloat16, 1, 130, 2, 128, 128, True),  # lane-direct layout, no decay
    (False, jnp.float32, 1, 64, 1, 64, 64, False),   # exactly one chunk, no initial state
    (True, jnp.bfloat16, 1, 70, 2, 32, 32, True),     # head dim 32 (exploration-scale DeltaNet), zero-padded to 64
]


@pytest.mark.parametrize("gated,dtype,b,t,h,dk,dv,with_state", TPU_CASES)
def test_tpu_kernels_match_oracle(gated, dtype, b, t, h, dk, dv, with_state):
    fn = gdr_tpu.chunk_gated_delta_rule_tpu if gated else dr_tpu.chunk_delta_rule_tpu
    kernel = lambda *a, **kw: fn(*a, interpret=INTERPRET, **kw)  # noqa: E731
    check_against_oracle(kernel, fresh_seed(), b=b, t=t, h=h, dk=dk, dv=dv, dtype=dtype, gated=gated,
                         with_state=with_state)


@pytest.mark.parametrize("d,gated,dtype", [(64, True, jnp.bfloat16), (128, False, jnp.bfloat16),
                                           (256, True, jnp.float32)])
def test_tpu_kernels_lower_to_mosaic(d, gated, dtype):
    """Forward and backward lower to Mosaic TPU MLIR (cross-platform lowering; no TPU needed), each with a cost
    estimate that matches the kernel's work."""
    q = jnp.zeros((1, 128, 2, d), dtype)
    per_head = jnp.zeros((1, 128, 2))

    def loss(q, k, v, g, beta, s0):
        o, s = gdr_tpu.chunk_gated_delta_rule_tpu(q, k, v, g, beta, initial_state=s0, output_final_state=True)
        return jnp.sum(o.astype(jnp.float32)) + jnp.sum(s)

    argnums = (0, 1, 2, 3, 4, 5) if gated else (0, 1, 2, 4, 5)
    lowered = jax.jit(jax.grad(loss, argnums=argnums)).trace(
        q, q, q, per_head if gated else None, per_head, jnp.zeros((1, 2, d, d))).lower(lowering_platforms=("tpu",))
    text = lowered.as_text()
    assert text.count("tpu_custom_call") == 2  # one forward and one backward kernel
    # Each kernel tells XLA's scheduler its cost. Forward: 5 C x C x D and 3 C x D x D matmuls per chunk, and the
    # triangular inverse's 15 + 2 log2(C / 16) C x C x C matmuls (chunk_math.unit_lower_inverse); elementwise work
    # adds a few percent. Bytes: q, k, v, o; g and beta; the initial, final and per-chunk saved states.
    fwd, bwd = sorted(tpu_cost_estimates(text), key=lambda e: e["flops"])
    c, steps, chunks = 64, 2 * 2, 2
    matmuls = 5 * 2 * c * c * d + 3 * 2 * c * d * d + 19 * 2 * c**3
    assert 1.0 <= fwd["flops"] / (steps * matmuls) <= 1.1, fwd
    assert 1.3 * fwd["flops"] <= bwd["flops"] <= 3 * fwd["flops"], (fwd, bwd)
    assert fwd["transcendentals"] == (steps * (c * c + 2 * c + 1) if gated else 0), fwd  # Gam, gamma, decays
    state = 2 * d * d * 4
    scalars = (2 if gated else 1) * 128 * 2 * 4
    assert fwd["bytes_accessed"] == 4 * q.size * q.dtype.itemsize + scalars + (2 + chunks) * state, fwd


def test_kernel_applies_rejects_what_it_cannot_do():
    q = jnp.zeros((1, 64, 1, 64), jnp.bfloat16)
    b = jnp.zeros((1, 64, 1))
    assert gdr_tpu.applies(q, q, q, b, b)
    assert not gdr_tpu.applies(q, q, q, b, b, chunk_size=32)
    q32 = jnp.zeros((1, 64, 1, 32), jnp.bfloat16)
    assert gdr_tpu.applies(q32, q32, q32, b, b)  # zero-padded to 64 (exact)
    q320 = jnp.zeros((1, 64, 1, 320), jnp.bfloat16)
    assert not gdr_tpu.applies(q320, q320, q320, b, b)  # above the largest tile
    q16 = q.astype(jnp.float16)
    assert not dr_tpu.applies(q16, q16, q16, b)
    assert not dr_tpu.applies(q, q, q.astype(jnp.float32), b)


# ----------------------------------------------------------------------------------------------- dispatch


@pytest.fixture
def fake_cpu_kernel(monkeypatch):
    calls = []

    def fake(q, k, v, g, beta, **kw):
        calls.append(kw)
        return ops.gated_delta_rule(q, k, v, g, beta, impl="xla", **kw)

    monkeypatch.setitem(dispatch._registry, ("gated_delta_rule", "cpu"),
                        dispatch.Kernel(fake, lambda *a, chunk_size=64, **kw: chunk_size == 64))
    return calls


def _small():
    d = make_inputs(fresh_seed(), b=1, t=16, h=1, dk=8, dv=8, dtype=jnp.float32, gated=True)
    return d["q"], d["k"], d["v"], d["g"], d["beta"]


def test_dispatch_prefers_registered_kernel_and_honours_forcing(fake_cpu_kernel, monkeypatch):
    args = _small()
    ops.gated_delta_rule(*args)  # auto: the registered cpu kernel runs
    assert len(fake_cpu_kernel) == 1
    assert dispatch.choose("gated_delta_rule", None, args, dict(chunk_size=16))[0] == "xla"  # applies() says no
    with ops.use_impl("xla"):
        assert dispatch.choose("gated_delta_rule", None, args, dict(chunk_size=64))[0] == "xla"
    ops.set_impl("xla")
    try:
        assert dispatch.choose("gated_delta_rule", None, args, dict(chunk_size=64))[0] == "xla"
    finally:
        ops.set_impl(None)
    monkeypatch.setenv("AIRA_JAX_OPS_IMPL", "xla")
    ops.gated_delta_rule(*args)  # end to end under the environment variable: the XLA path, not the kernel
    assert len(fake_cpu_kernel) == 1, "forcing 'xla' must bypass the registered kernel"
    monkeypatch.delenv("AIRA_JAX_OPS_IMPL")
    assert dispatch.choose("gated_delta_rule", None, args, dict(chunk_size=64))[0] == "kernel"


def test_dispatch_lazily_loads_backend_kernels(monkeypatch):
    monkeypatch.setattr(dispatch, "_loaded_backends", set())
    monkeypatch.setattr(dispatch.jax, "default_backend", lambda: "tpu")
    args = _small()
    q, k, v, g, beta = (jnp.zeros((1, 64, 1, 64), jnp.bfloat16),) * 3 + (jnp.zeros((1, 64, 1)),) * 2
    # Recorded at the source: other tests reconfigure absl's handlers, so caplog may not see its records.
    said = []
    monkeypatch.setattr(dispatch.logging, "info", lambda msg, *a: said.append(msg % a))
    path, kernel = dispatch.choose("gated_delta_rule", None, (q, k, v, g, beta), dict(chunk_size=64))
    assert path == "kernel" and kernel.fn is gdr_tpu.chunk_gated_delta_rule_tpu
    text = "\n".join(said)
    assert "pallas_kernels.gated_delta_rule.tpu" in text and "pallas_kernels.delta_rule.tpu" in text
    path, _ = dispatch.choose("delta_rule", None, (q, k, v, beta), dict(chunk_size=32))
    assert path == "xla"
    path, _ = dispatch.choose("gated_delta_rule", None, args, dict(chunk_size=64))  # head dim 8: padded to 64
    assert path == "kernel"
    big = jnp.zeros((1, 64, 1, 512), jnp.bfloat16)
    path, _ = dispatch.choose("gated_delta_rule", None, (big, big, big, g, beta), dict(chunk_size=64))
    assert path == "xla"  # above the largest tile: no kernel


def test_dispatch_warns_on_broken_kernel_module(monkeypatch):
    monkeypatch.setattr(dispatch, "_loaded_backends", set())
    real_import = dispatch.importlib.import_module

    def broken(name):
        if name == "pallas_kernels.delta_rule.gpu":
            raise ImportError("Failed to import the Mosaic GPU bindings")
        if name.endswith(".gpu"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name)

    monkeypatch.setattr(dispatch.importlib, "import_module", broken)
    warnings = []   # recorded at the source (other tests reconfigure absl's handlers)
    monkeypatch.setattr(dispatch.logging, "warning", lambda msg, *a: warnings.append(msg % a))
    assert dispatch.load_backend_kernels("cuda") == []
    assert dispatch.load_backend_kernels("gpu") == []  # loads once per backend
    assert len(warnings) == 1 and "Mosaic GPU bindings" in warnings[0]
    assert "delta_rule.gpu" in warnings[0]


# ------------------------------------------------------------------------------------------------ Mosaic GPU


@pytest.mark.parametrize("scheme", gdr_gpu.SCHEMES)
def test_gpu_kernel_matches_oracle_in_gpu_interpreter(scheme):
    """The Mosaic GPU bodies (TMA copies, barriers, wgmma through SMEM, relayouts) under the GPU interpreter.
    Two batches of three heads: every CTA finds its own strided windows of the op layout [B, T, H, D]."""
    kernel = lambda *a, **kw: gdr_gpu.chunk_gated_delta_rule_gpu(  # noqa: E731
        *a, interpret=GPU_INTERPRET, scheme=scheme, **kw)
    check_against_oracle(kernel, fresh_seed(), b=2, t=100, h=3, dk=64, dv=64, dtype=jnp.bfloat16, gated=True,
                         with_state=True)


def test_gpu_kernels_with_heads_as_batch_match_oracle(monkeypatch):
    """AIRA_GPU_STRIDED_TMA=0: the same kernels on heads moved into the batch (contiguous TMA windows)."""
    monkeypatch.setenv("AIRA_GPU_STRIDED_TMA", "0")
    kernel = lambda *a, **kw: gdr_gpu.chunk_gated_delta_rule_gpu(  # noqa: E731
        *a, interpret=GPU_INTERPRET, scheme="chunked", **kw)
    check_against_oracle(kernel, fresh_seed(), b=2, t=70, h=2, dk=64, dv=128, dtype=jnp.bfloat16, gated=True,
                         with_state=True)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", gdr_gpu.SCHEMES)
def test_gpu_delta_rule_kernel_matches_oracle_in_gpu_interpreter(scheme):
    kernel = lambda *a, **kw: dr_gpu.chunk_delta_rule_gpu(  # noqa: E731
        *a, interpret=GPU_INTERPRET, scheme=scheme, **kw)
    check_against_oracle(kernel, fresh_seed(), b=1, t=130, h=2, dk=64, dv=64, dtype=jnp.float32, gated=False,
                         with_state=True)


@pytest.mark.parametrize("gated,dk,dv,scheme", [
    (True, 128, 128, "chunked"), pytest.param(True, 128, 128, "fused", marks=pytest.mark.slow),
    pytest.param(False, 64, 128, "chunked", marks=pytest.mark.slow),
    pytest.param(False, 64, 128, "fused", marks=pytest.mark.slow)])
def test_gpu_kernel_value_blocks_match_oracle_in_gpu_interpreter(gated, dk, dv, scheme):
    """Dv = 128 runs as two 64-column value blocks per head: partial dq, dk, dbeta, dg summed, dv and dS0 joined."""
    assert gdr_gpu.value_blocks(dv) == 2
    fn = gdr_gpu.chunk_gated_delta_rule_gpu if gated else dr_gpu.chunk_delta_rule_gpu
    kernel = lambda *a, **kw: fn(*a, interpret=GPU_INTERPRET, scheme=scheme, **kw)  # noqa: E731
    check_against_oracle(kernel, fresh_seed(), b=2, t=100, h=1, dk=dk, dv=dv, dtype=jnp.bfloat16, gated=gated,
                         with_state=True)


def test_gpu_applies_sizes_smem():
    b = jnp.zeros((1, 64, 1))
    qs = {d: jnp.zeros((1, 64, 1, d), dt) for d, dt in ((32, jnp.bfloat16), (64, jnp.bfloat16),
                                                         (128, jnp.bfloat16), (256, jnp.bfloat16))}
    assert gdr_gpu.applies(qs[64], qs[64], qs[64], b, b, check_device=False)
    assert gdr_gpu.applies(qs[32], qs[32], qs[32], b, b, check_device=False)  # padded to 64, which fits
    assert gdr_gpu.applies(qs[128], qs[128], qs[128], b, b, check_device=False)  # two value blocks of 64
    assert not gdr_gpu.applies(qs[256], qs[256], qs[256], b, b, check_device=False)  # no 256 kernel on GPU
    q128_32 = qs[128].astype(jnp.float32)
    assert not gdr_gpu.applies(q128_32, q128_32, q128_32, b, b, check_device=False)  # fp32 D128: over SMEM
    assert gdr_gpu.fits_smem(True, 128, 128, jnp.bfloat16) and not gdr_gpu.fits_smem(True, 128, 128, jnp.float32)
    assert dr_gpu.applies(qs[64], qs[64], qs[64], b) is common.is_hopper()  # wgmma: Hopper only


GPU_CASES = [(True, jnp.bfloat16, 2, 300, 2, True, 64), (False, jnp.bfloat16, 2, 200, 3, True, 64),
             (True, jnp.float32, 1, 128, 2, False, 64), (False, jnp.bfloat16, 2, 150, 2, True, 32),
             (True, jnp.bfloat16, 2, 200, 2, True, 128), (False, jnp.bfloat16, 1, 300, 3, True, 128)]


@pytest.mark.gpu
@pytest.mark.parametrize("scheme", gdr_gpu.SCHEMES)
@pytest.mark.parametrize("gated,dtype,b,t,h,with_state,d", GPU_CASES)
def test_gpu_kernels_match_oracle_on_hopper(gated, dtype, b, t, h, with_state, d, scheme):
    base = gdr_gpu.chunk_gated_delta_rule_gpu if gated else dr_gpu.chunk_delta_rule_gpu
    fn = lambda *a, **kw: base(*a, scheme=scheme, **kw)  # noqa: E731
    # fp32 matmuls run as three bf16 wgmmas on hi/lo splits (gpu.py, _GpuMath.dot): held to the fp32 bar.
    check_against_oracle(fn, fresh_seed(), b=b, t=t, h=h, dk=d, dv=d, dtype=dtype, gated=gated,
                         with_state=with_state)


@pytest.mark.gpu
def test_gpu_dispatch_picks_the_mosaic_kernel():
    q = jnp.zeros((1, 64, 1, 64), jnp.bfloat16)
    b = jnp.zeros((1, 64, 1))
    path, kernel = dispatch.choose("gated_delta_rule", None, (q, q, q, b, b), dict(chunk_size=64))
    assert path == "kernel" and kernel.fn is gdr_gpu.chunk_gated_delta_rule_gpu


# ------------------------------------------------------------------------------------------------ chunk math
@pytest.mark.parametrize("gated", [True, False])
def test_chunk_parallel_split_matches_the_fused_chunk_math(gated):
    """chunk_wu + chunk_state_step + chunk_output + chunk_state_grad (the GPU's chunk-parallel scheme) give the same
    output, end state and start-state gradient as chunk_forward / chunk_backward, value blocks included."""
    from pallas_kernels.gated_delta_rule import chunk_math as cm
    seed = fresh_seed()
    ks = jax.random.split(jax.random.PRNGKey(seed), 8)
    c, dk, dv = 64, 32, 48
    q = jax.random.normal(ks[0], (c, dk))
    k = ops.l2norm(jax.random.normal(ks[1], (c, dk)))
    v = jax.random.normal(ks[2], (c, dv))
    beta = jax.nn.sigmoid(jax.random.normal(ks[3], (c, 1)))
    g = -jax.nn.softplus(jax.random.normal(ks[4], (c, 1))) * 0.5 if gated else None
    s = 0.5 * jax.random.normal(ks[5], (dk, dv))
    do, ds_next = jax.random.normal(ks[6], (c, dv)), jax.random.normal(ks[7], (dk, dv))
    m = cm.ChunkMath(gated=gated, scale=dk ** -0.5)
    o_ref, s_ref = cm.chunk_forward(q, k, v, beta, g, s, m)
    *_, ds_ref = cm.chunk_backward(q, k, v, beta, g, s, do, ds_next, m)

    w, (u1, u2), t = cm.chunk_wu(k, [v[:, :16], v[:, 16:]], beta, g, m)  # two value blocks of 16 and 32 columns
    u_free = jnp.concatenate([u1, u2], axis=1)
    where = f"seed={seed} gated={gated}"
    assert rel_rms(cm.chunk_state_step(k, w, u_free, g, s, m), s_ref) < 1e-5, where
    assert rel_rms(cm.chunk_output(q, k, w, u_free, g, s, m), o_ref) < 1e-5, where
    assert rel_rms(cm.chunk_state_grad(q, k, w, g, do, ds_next, m), ds_ref) < 1e-5, where
    # Column blocks of the state are independent: a block's end state needs only its own columns.
    blk = cm.chunk_state_step(k, w, u2, g, s[:, 16:], m)
    assert rel_rms(blk, s_ref[:, 16:]) < 1e-5, where
    # The backward from the forward's T equals the one that recomputes the inverse.
    full = cm.chunk_backward(q, k, v, beta, g, s, do, ds_next, m)
    kept = cm.chunk_backward(q, k, v, beta, g, s, do, ds_next, m, t=t)
    for name, x, y in zip(("dq", "dk", "dv", "dbeta", "dg", "ds"), kept, full):
        if y is not None:
            assert rel_rms(x, y) < 1e-6, f"{where} {name}"


def test_backward_given_the_forwards_inverse_does_not_invert_again():
    """The GPU backward kernels pass the forward's T = (I + A)^-1 to chunk_backward: the 19 dependent fp32
    matmuls of the triangular inverse then leave the backward (and nothing else does)."""
    from pallas_kernels.gated_delta_rule import chunk_math as cm

    class Counting(cm.ChunkMath):
        def dot(self, a, b, *, ta=False, tb=False, dtype=jnp.float32):
            object.__setattr__(self, "n", getattr(self, "n", 0) + 1)
            return super().dot(a, b, ta=ta, tb=tb, dtype=dtype)

    c, dk, dv = 64, 16, 16
    q = k = jnp.ones((c, dk)) * 0.1
    v, do = jnp.ones((c, dv)), jnp.ones((c, dv))
    beta, g = jnp.full((c, 1), 0.5), jnp.full((c, 1), -0.1)
    s = ds_next = jnp.zeros((dk, dv))
    counts = {}
    for kept in (False, True):
        m = Counting(gated=True, scale=0.25)
        t = cm.chunk_wu(k, [v], beta, g, cm.ChunkMath(gated=True, scale=0.25))[2] if kept else None
        cm.chunk_backward(q, k, v, beta, g, s, do, ds_next, m, t=t)
        counts[kept] = m.n
    inverse = Counting(gated=True, scale=0.25)
    cm.unit_lower_inverse(jnp.zeros((c, c)), inverse)
    assert inverse.n == 19
    assert counts[False] - counts[True] == inverse.n, counts
