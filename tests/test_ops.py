"""aira_jax.ops against its float32 oracles: values, gradients, state passing, padding, GQA, windows."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aira_jax import ops
from aira_jax.ops import dispatch
from pallas_kernels.attention import naive_attention
from pallas_kernels.delta_rule import recurrent_delta_rule
from pallas_kernels.gated_delta_rule import recurrent_gated_delta_rule
from pallas_kernels.norms import reference as norm_ref
from pallas_kernels.short_conv import naive_short_conv
from pallas_kernels.simple_gla import recurrent_simple_gla

FP32_TOL = 1e-5  # relative RMS, chunked vs recurrent, both float32
BF16_TOL = 6e-3  # relative RMS of a bf16-input forward against the float32 oracle (flash-linear-attention's bar)


def rel_rms(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-30))


def fresh_key():
    # Fresh random inputs each run, with the seed printed on failure for replay.
    seed = int(np.random.SeedSequence().entropy % (2**31))
    print("seed", seed)
    return jax.random.PRNGKey(seed)


def make_inputs(key, b=2, t=150, h=2, dk=32, dv=48):
    ks = jax.random.split(key, 7)
    q = jax.random.normal(ks[0], (b, t, h, dk))
    k = ops.l2norm(jax.random.normal(ks[1], (b, t, h, dk)))
    v = jax.random.normal(ks[2], (b, t, h, dv))
    beta = jax.nn.sigmoid(jax.random.normal(ks[3], (b, t, h)))
    g = -jax.nn.softplus(jax.random.normal(ks[4], (b, t, h))) * 0.5
    s0 = 0.5 * jax.random.normal(ks[5], (b, h, dk, dv))
    return dict(q=q, k=k, v=v, beta=beta, g=g, s0=s0, do=jax.random.normal(ks[6], (b, t, h, dv)))


# (name, op, oracle, names of the tensor arguments in order)
RECURRENT_OPS = [
    ("delta_rule", ops.delta_rule, recurrent_delta_rule, ("q", "k", "v", "beta")),
    ("gated_delta_rule", ops.gated_delta_rule, recurrent_gated_delta_rule, ("q", "k", "v", "g", "beta")),
    ("simple_gla", ops.simple_gla, recurrent_simple_gla, ("q", "k", "v", "g")),
]


@pytest.mark.parametrize("name,op,oracle,argnames", RECURRENT_OPS, ids=[r[0] for r in RECURRENT_OPS])
@pytest.mark.parametrize("t", [64, 150])  # a multiple of the chunk and a ragged length
def test_chunked_matches_oracle_values_state_grads(name, op, oracle, argnames, t):
    d = make_inputs(fresh_key(), t=t)
    args = tuple(d[a] for a in argnames)
    o, s = op(*args, initial_state=d["s0"], output_final_state=True, impl="xla")
    o_ref, s_ref = oracle(*args, initial_state=d["s0"], output_final_state=True)
    assert o.shape == d["v"].shape and s.shape == d["s0"].shape and s.dtype == jnp.float32
    assert rel_rms(o, o_ref) <= FP32_TOL
    assert rel_rms(s, s_ref) <= FP32_TOL

    def loss(fn, *a_and_s0):
        *a, s0 = a_and_s0
        out, st = fn(*a, initial_state=s0, output_final_state=True)
        return jnp.sum(out * d["do"]) + jnp.sum(st * d["s0"])

    nargs = len(args) + 1
    g_xla = jax.grad(lambda *a: loss(lambda *x, **kw: op(*x, impl="xla", **kw), *a), argnums=tuple(range(nargs)))(
        *args, d["s0"])
    g_ref = jax.grad(lambda *a: loss(oracle, *a), argnums=tuple(range(nargs)))(*args, d["s0"])
    for argname, ga, gb in zip(argnames + ("initial_state",), g_xla, g_ref):
        assert rel_rms(ga, gb) <= FP32_TOL, f"{name}: gradient of {argname}"


@pytest.mark.parametrize("name,op,oracle,argnames", RECURRENT_OPS, ids=[r[0] for r in RECURRENT_OPS])
def test_state_passing_splits_exactly(name, op, oracle, argnames):
    """Running [0, 100) then [100, 170) from the carried state equals one pass over [0, 170)."""
    d = make_inputs(fresh_key(), t=170)
    args = tuple(d[a] for a in argnames)
    o_full, s_full = op(*args, output_final_state=True, impl="xla")
    first = tuple(a[:, :100] for a in args)
    second = tuple(a[:, 100:] for a in args)
    o1, s1 = op(*first, output_final_state=True, impl="xla")
    o2, s2 = op(*second, initial_state=s1, output_final_state=True, impl="xla")
    assert rel_rms(jnp.concatenate([o1, o2], axis=1), o_full) <= FP32_TOL
    assert rel_rms(s2, s_full) <= FP32_TOL


@pytest.mark.parametrize("name,op,oracle,argnames", RECURRENT_OPS, ids=[r[0] for r in RECURRENT_OPS])
def test_bf16_inputs_within_tolerance(name, op, oracle, argnames):
    d = make_inputs(fresh_key(), t=128, dk=64, dv=64)
    args = tuple(d[a] for a in argnames)
    o = op(*(a.astype(jnp.bfloat16) for a in args), impl="xla")
    assert o.dtype == jnp.bfloat16
    assert rel_rms(o, oracle(*args)) <= BF16_TOL


def test_ssd_equals_simple_gla_in_mamba_variables():
    key = fresh_key()
    ks = jax.random.split(key, 5)
    x = jax.random.normal(ks[0], (1, 70, 2, 16))
    dt = jax.nn.softplus(jax.random.normal(ks[1], (1, 70, 2)))
    a = -jnp.exp(jax.random.normal(ks[2], (2,)))
    b = jax.random.normal(ks[3], (1, 70, 2, 8))
    c = jax.random.normal(ks[4], (1, 70, 2, 8))
    y = ops.ssd(x, dt, a, b, c, impl="xla")
    y_ref = recurrent_simple_gla(c, b, x * dt[..., None], dt * a, scale=1.0)
    assert rel_rms(y, y_ref) <= FP32_TOL


@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("hkv", [4, 2, 1])  # MHA, GQA, MQA
def test_attention_matches_oracle(window, hkv):
    ks = jax.random.split(fresh_key(), 4)
    q = jax.random.normal(ks[0], (2, 23, 4, 16))
    k = jax.random.normal(ks[1], (2, 23, hkv, 16))
    v = jax.random.normal(ks[2], (2, 23, hkv, 16))
    o = ops.attention(q, k, v, sliding_window=window, impl="xla")
    assert rel_rms(o, naive_attention(q, k, v, sliding_window=window)) <= FP32_TOL
    do = jax.random.normal(ks[3], o.shape)
    g1 = jax.grad(lambda *a: jnp.sum(ops.attention(*a, sliding_window=window, impl="xla") * do), (0, 1, 2))(q, k, v)
    g2 = jax.grad(lambda *a: jnp.sum(naive_attention(*a, sliding_window=window) * do), (0, 1, 2))(q, k, v)
    for a, b in zip(g1, g2):
        assert rel_rms(a, b) <= FP32_TOL


@pytest.mark.parametrize("window", [None, 6])
def test_attention_kv_cache_continues_exactly(window):
    ks = jax.random.split(fresh_key(), 3)
    q, k, v = (jax.random.normal(kk, (1, 30, 2, 8)) for kk in ks)
    full = ops.attention(q, k, v, sliding_window=window, impl="xla")
    o1, cache = ops.attention(q[:, :18], k[:, :18], v[:, :18], sliding_window=window, output_final_state=True,
                              impl="xla")
    o2 = ops.attention(q[:, 18:], k[:, 18:], v[:, 18:], sliding_window=window, initial_state=cache, impl="xla")
    assert rel_rms(jnp.concatenate([o1, o2], 1), full) <= FP32_TOL


def test_short_conv_matches_oracle_and_state():
    ks = jax.random.split(fresh_key(), 4)
    x = jax.random.normal(ks[0], (2, 37, 12))
    w = jax.random.normal(ks[1], (4, 12))
    b = jax.random.normal(ks[2], (12,))
    y, st = ops.short_conv(x, w, b, output_final_state=True, impl="xla")
    y_ref, st_ref = naive_short_conv(x, w, b, output_final_state=True)
    assert rel_rms(y, y_ref) <= FP32_TOL and rel_rms(st, st_ref) <= FP32_TOL
    y1, s1 = ops.short_conv(x[:, :20], w, b, output_final_state=True, impl="xla")
    y2 = ops.short_conv(x[:, 20:], w, b, initial_state=s1, impl="xla")
    assert rel_rms(jnp.concatenate([y1, y2], 1), y) <= FP32_TOL
    gx = jax.grad(lambda x_, w_: jnp.sum(ops.short_conv(x_, w_, impl="xla") ** 2), (0, 1))(x, w)
    gr = jax.grad(lambda x_, w_: jnp.sum(naive_short_conv(x_, w_) ** 2), (0, 1))(x, w)
    assert all(rel_rms(a, c) <= FP32_TOL for a, c in zip(gx, gr))


def test_norms_and_rotary_match_numpy_oracles():
    ks = jax.random.split(fresh_key(), 4)
    x = jax.random.normal(ks[0], (2, 5, 3, 8))
    gate = jax.random.normal(ks[1], x.shape)
    w = jax.random.normal(ks[2], (8,))
    assert rel_rms(ops.rms_norm(x, w), norm_ref.rms_norm(x, w)) <= FP32_TOL
    assert rel_rms(ops.gated_rms_norm(x, gate, w), norm_ref.gated_rms_norm(x, gate, w)) <= FP32_TOL
    assert rel_rms(ops.l2norm(x), norm_ref.l2norm(x)) <= FP32_TOL
    assert rel_rms(ops.rotary(x), norm_ref.rotary(x)) <= FP32_TOL
    pos = jnp.array([[3, 4, 5, 6, 7], [0, 1, 2, 3, 4]])
    assert rel_rms(ops.rotary(x, pos), norm_ref.rotary(x, pos)) <= FP32_TOL
    # bf16 in, bf16 out, computed in fp32
    assert ops.rms_norm(x.astype(jnp.bfloat16), w).dtype == jnp.bfloat16


def test_rotary_relative_position_property():
    """q·k after RoPE depends only on the position difference."""
    ks = jax.random.split(fresh_key(), 2)
    q = jax.random.normal(ks[0], (1, 1, 1, 16))
    k = jax.random.normal(ks[1], (1, 1, 1, 16))
    dot = lambda pq, pk: float(jnp.sum(ops.rotary(q, jnp.array([pq])) * ops.rotary(k, jnp.array([pk]))))
    assert abs(dot(10, 7) - dot(33, 30)) < 1e-4
    assert abs(dot(10, 7) - dot(10, 2)) > 1e-4


def test_dispatch_forcing_and_errors(caplog):
    d = make_inputs(fresh_key(), t=20)
    args = (d["q"], d["k"], d["v"], d["beta"])
    with ops.use_impl("reference"):
        o_ref = ops.delta_rule(*args)
    assert dispatch.default_impl() in dispatch.IMPLS
    o_xla = ops.delta_rule(*args, impl="xla")
    assert rel_rms(o_xla, o_ref) <= FP32_TOL
    with pytest.raises(ValueError, match="must be one of"):
        ops.delta_rule(*args, impl="triton")
    with pytest.raises(NotImplementedError, match="no kernel"):
        ops.simple_gla(d["q"], d["k"], d["v"], d["g"], impl="kernel")
    with pytest.raises(ValueError, match="beta must be"):
        ops.delta_rule(d["q"], d["k"], d["v"], d["beta"][:, :3], impl="xla")
    with pytest.raises(ValueError, match="initial_state"):
        ops.delta_rule(*args, initial_state=jnp.zeros((1, 1, 1, 1)), impl="xla")


def test_registered_kernel_is_chosen_and_can_be_forced_off(monkeypatch):
    calls = []

    def fake_kernel(q, k, v, g, **kw):
        calls.append(1)
        return recurrent_simple_gla(q, k, v, g, **{a: b for a, b in kw.items() if a != "chunk_size"})

    monkeypatch.setitem(dispatch._registry, ("simple_gla", jax.default_backend()),
                        dispatch.Kernel(fake_kernel, applies=lambda q, *a, **kw: q.shape[-1] <= 32))
    d = make_inputs(fresh_key(), t=10)
    ops.simple_gla(d["q"], d["k"], d["v"], d["g"])
    assert calls == [1]
    ops.simple_gla(d["q"], d["k"], d["v"], d["g"], impl="xla")
    assert calls == [1]
    big = jnp.zeros((1, 4, 1, 64))
    ops.simple_gla(big, big, big, jnp.zeros((1, 4, 1)))  # applies() refuses dk=64: falls back to XLA
    assert calls == [1]


@pytest.mark.parametrize("c", [16, 64])
def test_unit_lower_inverse_matches_solve_and_its_gradient(c):
    from pallas_kernels.common import unit_lower_inverse
    ks = jax.random.split(fresh_key(), 2)
    a = jnp.tril(jax.random.normal(ks[0], (3, c, c)) * 0.3, -1)
    eye = jnp.eye(c)
    want = jax.scipy.linalg.solve_triangular(eye + a, jnp.broadcast_to(eye, a.shape), lower=True)
    assert rel_rms(unit_lower_inverse(a), want) <= FP32_TOL
    g = jax.random.normal(ks[1], a.shape)
    ga = jax.grad(lambda x: jnp.sum(unit_lower_inverse(x) * g))(a)
    gb = jax.grad(lambda x: jnp.sum(jnp.linalg.inv(eye + jnp.tril(x, -1)) * g))(a)
    assert rel_rms(ga, gb) <= 1e-4


@pytest.mark.parametrize("t,window,hkv", [(64, 8, 2), (50, 7, 1), (40, 20, 4)])
def test_sliding_window_uses_banded_form_and_matches_oracle(t, window, hkv):
    """Windows at most half the length take the O(T W) banded path; values and gradients match the oracle."""
    ks = jax.random.split(fresh_key(), 4)
    q = jax.random.normal(ks[0], (2, t, 4, 16))
    k = jax.random.normal(ks[1], (2, t, hkv, 16))
    v = jax.random.normal(ks[2], (2, t, hkv, 16))
    o = ops.attention(q, k, v, sliding_window=window, impl="xla")
    assert rel_rms(o, naive_attention(q, k, v, sliding_window=window)) <= FP32_TOL
    do = jax.random.normal(ks[3], o.shape)
    g1 = jax.grad(lambda *a: jnp.sum(ops.attention(*a, sliding_window=window, impl="xla") * do), (0, 1, 2))(q, k, v)
    g2 = jax.grad(lambda *a: jnp.sum(naive_attention(*a, sliding_window=window) * do), (0, 1, 2))(q, k, v)
    assert all(rel_rms(a, b) <= FP32_TOL for a, b in zip(g1, g2))
    # Cost grows linearly with T at a fixed window (the dense masked form would grow 4x per doubling).
    def flops(tt):
        x = jax.ShapeDtypeStruct((1, tt, 4, 16), jnp.float32)
        kv = jax.ShapeDtypeStruct((1, tt, hkv, 16), jnp.float32)
        c = jax.jit(lambda a, b, c_: ops.attention(a, b, c_, sliding_window=window, impl="xla")).lower(
            x, kv, kv).compile().cost_analysis()
        return (c[0] if isinstance(c, (list, tuple)) else c)["flops"]
    assert flops(32 * window) / flops(16 * window) < 2.3
