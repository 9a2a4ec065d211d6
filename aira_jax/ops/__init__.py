"""The stable op API that models and agent-written design programs build on.

Every op has a float32 naive oracle (`impl='reference'`), an XLA chunked implementation (`impl='xla'`, runs
everywhere) and, where one exists for the running backend, a Pallas kernel picked automatically. Layout is
[batch, time, heads, dim]; recurrent states are float32 [batch, heads, dk, dv]. Force the XLA path with
`impl='xla'`, `ops.set_impl('xla')`, `with ops.use_impl('xla'):` or AIRA_JAX_OPS_IMPL=xla.
"""
from __future__ import annotations

from pallas_kernels import attention as _attn
from pallas_kernels import delta_rule as _dr
from pallas_kernels import gated_delta_rule as _gdr
from pallas_kernels import norms as _norms
from pallas_kernels import short_conv as _conv
from pallas_kernels import simple_gla as _sgla

from aira_jax.ops.dispatch import choose, register_kernel, set_impl, use_impl

__all__ = ["attention", "delta_rule", "gated_delta_rule", "gated_rms_norm", "l2norm", "register_kernel",
           "rms_norm", "rotary", "set_impl", "short_conv", "simple_gla", "ssd", "use_impl"]


def _run(op, impl, xla_fn, ref_fn, args, kwargs):
    path, kernel = choose(op, impl, args, kwargs)
    if path == "kernel":
        return kernel.fn(*args, **kwargs)
    if path == "reference":
        kwargs = {k: val for k, val in kwargs.items() if k != "chunk_size"}
        return ref_fn(*args, **kwargs)
    return xla_fn(*args, **kwargs)


def delta_rule(q, k, v, beta, *, scale=None, initial_state=None, output_final_state=False, chunk_size=64,
               impl=None):
    """DeltaNet: S_t = (I - b_t k_t k_t^T) S_{t-1} + b_t k_t v_t^T, o_t = scale q_t^T S_t. Returns o[, state]."""
    kw = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state, chunk_size=chunk_size)
    return _run("delta_rule", impl, _dr.chunk_delta_rule, _dr.recurrent_delta_rule, (q, k, v, beta), kw)


def gated_delta_rule(q, k, v, g, beta, *, scale=None, initial_state=None, output_final_state=False, chunk_size=64,
                     impl=None):
    """Gated DeltaNet: S_t = exp(g_t)(I - b_t k_t k_t^T) S_{t-1} + b_t k_t v_t^T; g is a log decay [B,T,H]."""
    kw = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state, chunk_size=chunk_size)
    return _run("gated_delta_rule", impl, _gdr.chunk_gated_delta_rule, _gdr.recurrent_gated_delta_rule,
                (q, k, v, g, beta), kw)


def simple_gla(q, k, v, g, *, scale=None, initial_state=None, output_final_state=False, chunk_size=64, impl=None):
    """Simple GLA / SSD: S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = scale q_t^T S_t; g is a log decay [B,T,H]."""
    kw = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state, chunk_size=chunk_size)
    return _run("simple_gla", impl, _sgla.chunk_simple_gla, _sgla.recurrent_simple_gla, (q, k, v, g), kw)


def ssd(x, dt, a, b, c, *, initial_state=None, output_final_state=False, chunk_size=64, impl=None):
    """Mamba2's SSD in its own variables: x [B,T,H,P], dt [B,T,H] (after softplus), a [H] (negative),
    b, c [B,T,H,N]. Equals simple_gla(q=c, k=b, v=x*dt, g=a*dt, scale=1)."""
    v = (x.astype("float32") * dt[..., None].astype("float32")).astype(x.dtype)
    g = dt.astype("float32") * a.astype("float32")
    return simple_gla(c, b, v, g, scale=1.0, initial_state=initial_state, output_final_state=output_final_state,
                      chunk_size=chunk_size, impl=impl)


def attention(q, k, v, *, causal=True, sliding_window=None, scale=None, initial_state=None,
              output_final_state=False, impl=None):
    """Softmax attention; GQA when k/v have fewer heads; cuDNN on GPU where it applies, XLA elsewhere."""
    kw = dict(causal=causal, sliding_window=sliding_window, scale=scale, initial_state=initial_state,
              output_final_state=output_final_state)
    return _run("attention", impl, _attn.attention, _attn.naive_attention, (q, k, v), kw)


def short_conv(x, weight, bias=None, *, activation="silu", initial_state=None, output_final_state=False, impl=None):
    """Causal depthwise conv over time: x [B,T,C], weight [K,C]; state = last K-1 inputs."""
    kw = dict(activation=activation, initial_state=initial_state, output_final_state=output_final_state)
    return _run("short_conv", impl, _conv.short_conv, _conv.naive_short_conv, (x, weight, bias), kw)


rms_norm = _norms.rms_norm
gated_rms_norm = _norms.gated_rms_norm
l2norm = _norms.l2norm
rotary = _norms.rotary
