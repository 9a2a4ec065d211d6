"""The registered Mosaic GPU kernels of delta_rule, gated_delta_rule and simple_gla against the float32 oracles.

Runs only on a GPU machine (`pytest -m gpu tests/test_pallas_gpu.py`); elsewhere every test skips with the
reason. Through aira_jax.ops with impl='kernel' (so dispatch and applies() are exercised too): forward, final
state and the gradients of every input, bf16 inputs compared with the oracle on the same bf16-rounded values,
relative RMS <= 6e-3 forward and <= 8e-3 gradients; fp32 tighter where the kernel takes fp32.
"""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aira_jax import ops
from aira_jax.ops import dispatch
from pallas_kernels.delta_rule import recurrent_delta_rule
from pallas_kernels.gated_delta_rule import recurrent_gated_delta_rule
from pallas_kernels.simple_gla import recurrent_simple_gla

pytestmark = pytest.mark.gpu

TOL = {"bf16": (6e-3, 8e-3), "fp32": (1e-4, 1e-4)}  # (forward, gradients), relative RMS
DTYPES = {"bf16": jnp.bfloat16, "fp32": jnp.float32}
OPS = {  # op -> (tensor argument names, oracle)
    "delta_rule": (("q", "k", "v", "beta"), recurrent_delta_rule),
    "gated_delta_rule": (("q", "k", "v", "g", "beta"), recurrent_gated_delta_rule),
    "simple_gla": (("q", "k", "v", "g"), recurrent_simple_gla),
}
# (batch, time, heads, dk, dv, with initial/final state): a ragged length with states, and D = 128 without.
CASES = {"ragged_T_states_d64": (2, 300, 2, 64, 64, True), "d128": (1, 256, 2, 128, 128, False)}


def rel_rms(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-30))


def gpu_kernel(op):
    """The registered GPU kernel of `op`, or a skip that says why there is none to test."""
    if jax.default_backend() != "gpu":
        pytest.skip(f"needs a GPU; jax.default_backend() is {jax.default_backend()!r}")
    name = f"pallas_kernels.{op}.gpu"
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:  # the module exists but one of its imports is missing: a real failure
            raise
        pytest.skip(f"{name} is missing")
    entry = dispatch._registry.get((op, "gpu"))
    assert entry is not None, f"{name} imported but did not register_kernel({op!r}, 'gpu', ...)"
    return entry


def make_inputs(seed, b, t, h, dk, dv, dtype):
    ks = jax.random.split(jax.random.PRNGKey(seed), 8)
    cast = lambda x: x.astype(dtype).astype(jnp.float32)  # noqa: E731 - values exactly representable in dtype
    return dict(
        q=cast(jax.random.normal(ks[0], (b, t, h, dk))),
        k=cast(ops.l2norm(jax.random.normal(ks[1], (b, t, h, dk)))),
        v=cast(jax.random.normal(ks[2], (b, t, h, dv))),
        beta=cast(jax.nn.sigmoid(jax.random.normal(ks[3], (b, t, h)))),
        g=-jax.nn.softplus(jax.random.normal(ks[4], (b, t, h))) * 0.5,
        s0=0.5 * jax.random.normal(ks[5], (b, h, dk, dv)),
        do=jax.random.normal(ks[6], (b, t, h, dv)),
        dsf=jax.random.normal(ks[7], (b, h, dk, dv)),
    )


def values_and_grads(fn, d, argnames, dtype, with_state):
    def loss(*args):
        *xs, s0 = args
        if with_state:
            o, s = fn(*xs, initial_state=s0, output_final_state=True)
            return jnp.sum(o.astype(jnp.float32) * d["do"]) + jnp.sum(s * d["dsf"]), (o, s)
        o = fn(*xs)
        return jnp.sum(o.astype(jnp.float32) * d["do"]), (o, None)

    args = [d[n].astype(dtype) if n in ("q", "k", "v", "beta") else d[n] for n in argnames] + [d["s0"]]
    run = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(args))), has_aux=True))
    (_, out), grads = run(*args)
    return out, grads if with_state else grads[:-1]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype_name", ["bf16", "fp32"])
@pytest.mark.parametrize("op", list(OPS))
def test_gpu_kernel_matches_oracle(op, dtype_name, case):
    entry = gpu_kernel(op)
    argnames, oracle = OPS[op]
    b, t, h, dk, dv, with_state = CASES[case]
    dtype = DTYPES[dtype_name]
    seed = int(np.random.SeedSequence().entropy % (2**31))
    d = make_inputs(seed, b, t, h, dk, dv, dtype)
    probe = [d[n].astype(dtype) if n in ("q", "k", "v", "beta") else d[n] for n in argnames]
    if not entry.applies(*probe, chunk_size=64):
        if dtype_name == "bf16":
            pytest.fail(f"{op}: the GPU kernel must take bf16 {case} ({b}x{t}x{h}, dk {dk}, dv {dv})")
        pytest.skip(f"{op}: the GPU kernel does not take {dtype_name} (dispatch falls back to XLA)")

    kernel = lambda *a, **kw: getattr(ops, op)(*a, impl="kernel", **kw)  # noqa: E731
    (o, s), grads = values_and_grads(kernel, d, argnames, dtype, with_state)
    (o_ref, s_ref), grads_ref = values_and_grads(oracle, d, argnames, jnp.float32, with_state)
    fwd_tol, grad_tol = TOL[dtype_name]
    where = f"{op} {dtype_name} {case} seed {seed}"
    assert o.dtype == dtype and o.shape == (b, t, h, dv), f"{where}: output {o.dtype} {o.shape}"
    err = rel_rms(o, o_ref)
    assert err <= fwd_tol, f"{where}: forward rel RMS {err:.2e} > {fwd_tol}"
    if with_state:
        assert s.dtype == jnp.float32 and s.shape == (b, h, dk, dv), f"{where}: state {s.dtype} {s.shape}"
        err = rel_rms(s, s_ref)
        assert err <= fwd_tol, f"{where}: final state rel RMS {err:.2e} > {fwd_tol}"
    for name, ga, gb in zip(argnames + (("initial_state",) if with_state else ()), grads, grads_ref):
        assert np.all(np.isfinite(np.asarray(ga, np.float32))), f"{where}: non-finite gradient of {name}"
        err = rel_rms(ga, gb)
        assert err <= grad_tol, f"{where}: gradient of {name} rel RMS {err:.2e} > {grad_tol}"


@pytest.mark.parametrize("op", list(OPS))
def test_gpu_kernel_is_the_automatic_choice(op):
    """On a GPU, ops picks the registered kernel by itself for the standard bf16 case (impl unset)."""
    entry = gpu_kernel(op)
    argnames, _ = OPS[op]
    d = make_inputs(0, 1, 128, 2, 64, 64, jnp.bfloat16)
    args = [d[n].astype(jnp.bfloat16) if n in ("q", "k", "v", "beta") else d[n] for n in argnames]
    path, kernel = dispatch.choose(op, None, tuple(args), dict(chunk_size=64))
    assert path == "kernel" and kernel is entry
    auto = getattr(ops, op)(*args)
    forced = getattr(ops, op)(*args, impl="kernel")
    assert rel_rms(auto, forced) == 0.0


@pytest.mark.parametrize("op", list(OPS))
def test_the_kernel_self_test_passes_the_compiled_kernel(op):
    """The check every training run makes before its first step (aira_jax.ops.selftest) does not set aside a
    correct kernel on the hardware: a bf16 call with a ragged length and states, and one at D = 128, each far
    inside the self-test's tolerance. Prints the errors and seconds (the self-test's cost per signature)."""
    from aira_jax.ops import selftest
    entry = gpu_kernel(op)
    argnames, _ = OPS[op]
    for b, t, h, dk, dv, with_state in CASES.values():
        seq = [jax.ShapeDtypeStruct((b, t, h, dv if n == "v" else dk), jnp.bfloat16) for n in argnames[:3]]
        gates = [jax.ShapeDtypeStruct((b, t, h), jnp.bfloat16) for _ in argnames[3:]]
        state = jax.ShapeDtypeStruct((b, h, dk, dv), jnp.float32) if with_state else None
        call = selftest.KernelCall.of(op, "gpu", tuple(seq + gates), dict(
            scale=None, initial_state=state, output_final_state=with_state, chunk_size=64), entry.fn)
        verdict = selftest.check_call(call)
        print(f"self-test {verdict['call']}: worst {verdict['worst']} {verdict['max_rel_err']:.2e}, "
              f"{verdict['seconds']:.1f} s")
        assert verdict["ok"] and not verdict.get("skipped"), verdict
        assert verdict["max_rel_err"] < 0.25 * verdict["tolerance"], verdict
