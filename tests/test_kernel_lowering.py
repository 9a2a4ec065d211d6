"""The Mosaic GPU kernels lower for CUDA on a machine without a GPU (and whole models lower for CUDA and TPU).

`jax.export(..., platforms=['cuda'])` runs the whole Pallas -> Mosaic GPU lowering on the CPU: layout inference,
the wgmma operand rules (which operands may be transposed views, for which dtypes), TMA descriptors and the
shared-memory total against the per-block limit of an H100/H200. It does not compile PTX (registers) or run
anything: the numbers are checked by the interpreter tests and, on the GPU machine, by tests/test_pallas_gpu.py.
Every case that `applies()` accepts must lower, in both the inference forward and the forward + backward.
"""
import re

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax import export

from aira_jax.models import build_model
from aira_jax.ops import dispatch
from aira_jax.train.state import cast_floating
from pallas_kernels.delta_rule import gpu as dr_gpu
from pallas_kernels.gated_delta_rule import gpu as gdr_gpu
from pallas_kernels.simple_gla import gpu as gla_gpu

B, T, H = 1, 128, 2  # two chunks: the in-kernel chunk loop is traced as a loop, not unrolled away


def _inputs(dtype, d):
    x = jnp.zeros((B, T, H, d), dtype)
    vec = jnp.zeros((B, T, H), jnp.float32)
    return x, vec, jnp.zeros((B, H, d, d), jnp.float32)


def _op(name, scheme=None):
    """(kernel as f(q, k, v, vec, s0) -> (o, s_final), applies(q, k, v, vec)); scheme: the delta rules' GPU scheme"""
    if name == "delta_rule":
        return (lambda q, k, v, w, s: dr_gpu.chunk_delta_rule_gpu(q, k, v, w, initial_state=s, scheme=scheme,
                                                                  output_final_state=True),
                lambda q, k, v, w: dr_gpu.applies(q, k, v, w, check_device=False))
    if name == "gated_delta_rule":
        return (lambda q, k, v, w, s: gdr_gpu.chunk_gated_delta_rule_gpu(q, k, v, w * 0.1, w, initial_state=s,
                                                                         scheme=scheme, output_final_state=True),
                lambda q, k, v, w: gdr_gpu.applies(q, k, v, w, w, check_device=False))
    return (lambda q, k, v, w, s: gla_gpu.simple_gla_gpu(q, k, v, w, initial_state=s, output_final_state=True),
            lambda q, k, v, w: gla_gpu.applies(q, k, v, w, check_device=False))


def _lower(fn, *args):
    """The StableHLO text of fn lowered for CUDA (raises what the Mosaic GPU lowering raises)."""
    return export.export(jax.jit(fn), platforms=["cuda"])(*args).mlir_module()


def _forward_and_grad(kernel):
    def loss(q, k, v, w, s):
        o, s_final = kernel(q, k, v, w, s)
        return jnp.sum(o.astype(jnp.float32)) + jnp.sum(s_final)
    return kernel, jax.grad(loss, argnums=(0, 1, 2, 3, 4))


slow = pytest.mark.slow
CASES = [("delta_rule", jnp.bfloat16, 128, "chunked"), ("gated_delta_rule", jnp.bfloat16, 128, "chunked"),
         ("gated_delta_rule", jnp.bfloat16, 128, "fused"), ("simple_gla", jnp.bfloat16, 128, None),
         pytest.param("delta_rule", jnp.bfloat16, 128, "fused", marks=slow),
         pytest.param("gated_delta_rule", jnp.float32, 64, "chunked", marks=slow),
         pytest.param("gated_delta_rule", jnp.float32, 64, "fused", marks=slow),
         pytest.param("delta_rule", jnp.bfloat16, 64, "chunked", marks=slow),
         pytest.param("gated_delta_rule", jnp.bfloat16, 64, "fused", marks=slow),
         pytest.param("simple_gla", jnp.bfloat16, 64, None, marks=slow)]


@pytest.mark.parametrize("op,dtype,d,scheme", CASES)
def test_gpu_kernels_lower_for_cuda(op, dtype, d, scheme):
    kernel, applies = _op(op, scheme)
    x, vec, s0 = _inputs(dtype, d)
    assert applies(x, x, x, vec), f"{op} should take {jnp.dtype(dtype).name} D{d}"
    forward, grad = _forward_and_grad(kernel)
    for mode, fn in (("forward", forward), ("forward+backward", grad)):
        text = _lower(fn, x, x, x, vec, s0)
        assert "mosaic_gpu" in text, f"{op} {mode}: no Mosaic GPU custom call in the lowered module"
        # Launch names carry the configuration (profiler traces and bench/ptxas_report.py tell kernels apart).
        name = rf"\b{op}_[a-z_]+_k{d}_v64_{jnp.dtype(dtype).name}\b"
        assert re.search(name, text), f"{op} {mode}: no kernel named like {name} in the lowered module"


def _outside_kernels(jaxpr):
    """(eqns outside the Mosaic GPU kernels, number of kernel launches) of a traced program, nested calls included."""
    eqns, kernels = [], 0
    for e in jaxpr.eqns:
        if e.primitive.name in ("mpmd_map", "pallas_call"):  # a kernel launch: its body is the kernel's business
            kernels += 1
            continue
        eqns.append(e)
        for p in e.params.values():
            sub = getattr(p, "jaxpr", p)
            if hasattr(sub, "eqns"):
                more, n = _outside_kernels(sub)
                eqns, kernels = eqns + more, kernels + n
    return eqns, kernels


@pytest.mark.parametrize("op,scheme,launches", [("delta_rule", "chunked", 5), ("delta_rule", "fused", 2),
                                                ("gated_delta_rule", "chunked", 5), ("simple_gla", None, 3)])
def test_gpu_kernels_read_and_write_the_op_layout_in_place(op, scheme, launches):
    """Around the kernels of a forward + backward, XLA moves no [B, T, H, D] tensor between layouts: the kernels
    read q, k, v, dO and write o, dq, dk, dv as strided TMA windows of the op layout (each transpose copy would
    read and write a whole tensor). Only per-time vectors [B, T, H] (beta, g) are transposed."""
    b, t, h, d = 2, 128, 3, 128
    kernel, _ = _op(op, scheme)
    x = jnp.zeros((b, t, h, d), jnp.bfloat16)
    vec, s0 = jnp.zeros((b, t, h), jnp.float32), jnp.zeros((b, h, d, d), jnp.float32)
    _, grad = _forward_and_grad(kernel)
    eqns, kernels = _outside_kernels(jax.make_jaxpr(grad)(x, x, x, vec, s0).jaxpr)
    assert kernels == launches, f"{op}: {kernels} kernel launches traced, expected {launches}"
    moved = [(e.primitive.name, e.invars[0].aval.shape) for e in eqns
             if e.primitive.name in ("transpose", "gather", "concatenate")
             and e.invars[0].aval.size > b * t * h]
    assert not moved, f"{op}: layout copies of large tensors around the kernels: {moved}"


def test_heads_as_batch_fallback_lowers_and_is_the_copying_layout(monkeypatch):
    """AIRA_GPU_STRIDED_TMA=0 (for a machine whose TMA rejects the strided windows): the kernels see heads as
    batch rows, contiguous windows as before, at the price of the transposes; it must lower as well."""
    monkeypatch.setenv("AIRA_GPU_STRIDED_TMA", "0")
    kernel, _ = _op("delta_rule", "chunked")
    x, vec, s0 = _inputs(jnp.bfloat16, 128)
    _, grad = _forward_and_grad(kernel)
    assert "mosaic_gpu" in _lower(grad, x, x, x, vec, s0)
    eqns, _ = _outside_kernels(jax.make_jaxpr(grad)(x, x, x, vec, s0).jaxpr)
    assert any(e.primitive.name == "transpose" and e.invars[0].aval.size == x.size for e in eqns)


def test_smem_model_agrees_with_mosaic_where_the_kernel_refuses():
    """fp32 D128 is refused by applies() (SMEM); lowering it anyway must fail on shared memory, not elsewhere."""
    x, vec, s0 = _inputs(jnp.float32, 128)
    for scheme in gdr_gpu.SCHEMES:
        kernel, applies = _op("delta_rule", scheme)
        assert not applies(x, x, x, vec)
        assert not gdr_gpu.fits_smem(False, 128, 128, jnp.float32, scheme)
        with pytest.raises(ValueError, match="shared memory"):
            _lower(kernel, x, x, x, vec, s0)


MODEL_CASES = [("gpu", "deltanet", "delta_rule"), ("gpu", "mamba2", "simple_gla"),
               pytest.param("gpu", "gated_deltanet", "gated_delta_rule", marks=slow),
               ("tpu", "deltanet", "delta_rule"), ("tpu", "gated_deltanet", "gated_delta_rule"),
               ("tpu", "mamba2", "simple_gla")]


@pytest.mark.parametrize("backend,design,op", MODEL_CASES)
def test_model_training_step_lowers_with_the_backend_kernels(backend, design, op, monkeypatch):
    """A baseline LM's bf16 loss gradient, exported for CUDA (or TPU) from this host under
    dispatch.lowering_for(backend): ops picks the registered Pallas kernel (head dim 32 zero-padded to 64) and
    the whole step lowers, kernel included (Mosaic GPU fully; Mosaic TPU up to its serialized kernel)."""
    chosen = []
    log = dispatch.log_path
    monkeypatch.setattr(dispatch, "log_path", lambda o, path, why: (chosen.append((o, path)), log(o, path, why)))
    model = build_model({"vocab_size": 259, "d_model": 64, "num_layers": 2, "num_heads": 2, "design": design},
                        rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)

    def loss(params, tokens):
        logits = nnx.merge(graphdef, cast_floating(params, jnp.bfloat16))(tokens)
        return jnp.mean(logits.astype(jnp.float32) ** 2)

    platform = {"gpu": "cuda", "tpu": "tpu"}[backend]
    with dispatch.lowering_for(backend):
        text = export.export(jax.jit(jax.grad(loss)), platforms=[platform])(
            params, jnp.zeros((2, 256), jnp.int32)).mlir_module()
    assert (op, f"{backend} kernel") in chosen, chosen
    assert ("mosaic_gpu" if backend == "gpu" else "tpu_custom_call") in text
    assert dispatch.target_backend() == dispatch.canonical_backend(jax.default_backend())  # override ended


def test_lowering_for_rejects_unknown_backends():
    with pytest.raises(ValueError, match="unknown backend 'metal'"):
        with dispatch.lowering_for("metal"):
            pass
