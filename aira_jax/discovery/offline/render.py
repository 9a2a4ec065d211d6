"""Renders a MixerGenome as a readable design program in the contract form (`class Mixer(nnx.Module)`).

The program is what a careful human would write for that design: the baseline's helpers, one block of code per
design decision with a comment saying why, and the genome as a JSON comment line so the program can be read back
(`genome.genome_of`). The default genome renders to a program computing exactly what the DeltaNet baseline does,
with the same parameter names and initialisation.
"""
from __future__ import annotations

import textwrap

from aira_jax.discovery.offline.genome import GENOME_MARK, MixerGenome

_HEADER = '''import math

import jax
import jax.numpy as jnp
from flax import nnx

from aira_jax import ops


def _linear(d_in, d_out, axes, std, rngs):
  # Logical axis names let the trainer shard the kernel; eager_sharding=False defers placement to it.
  init = nnx.with_partitioning(nnx.initializers.normal(std), axes, eager_sharding=False)
  return nnx.Linear(d_in, d_out, use_bias=False, kernel_init=init, rngs=rngs)


def _conv_weight(width, channels, rngs):
  # PyTorch's default for a depthwise Conv1d (fan_in = width).
  bound = 1.0 / math.sqrt(width)
  w = jax.random.uniform(rngs.params(), (width, channels), jnp.float32, -bound, bound)
  return nnx.Param(w, out_sharding=(None, 'heads'), eager_sharding=False)


def _vector(values):
  return nnx.Param(jnp.asarray(values, jnp.float32), out_sharding=(None,), eager_sharding=False)


def _inv_softplus(y):
  # softplus^-1, so that softplus(param) starts at y.
  return y + jnp.log(-jnp.expm1(-y))
'''

_DT_BIAS = '''

def _dt_bias(num_heads, rngs, dt_min, dt_max, dt_floor=1e-4):
  # Mamba2's init: dt log-uniform in [dt_min, dt_max]; store softplus^-1(dt) so softplus(dt_bias) = dt.
  u = jax.random.uniform(rngs.params(), (num_heads,), jnp.float32)
  dt = jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
  return _inv_softplus(jnp.maximum(dt, dt_floor))
'''

# decay_span -> initial memory horizons (tokens) of a learned constant decay, spread log-uniformly over heads.
FIXED_HORIZONS = {"short": (4.0, 32.0), "medium": (16.0, 128.0), "long": (64.0, 1024.0)}
# decay_span -> (A range, dt range) of the Mamba2 parametrisation.
MAMBA_SPANS = {"short": ((1.0, 16.0), (1e-2, 1e-1)), "medium": ((0.0, 16.0), (1e-3, 1e-1)),
               "long": ((0.0, 1.0), (1e-3, 1e-2))}
# decay_span -> bias of logsigmoid(Wx + b) / 16 (GLA's normaliser): horizon ~ 16 / -logsigmoid(b) tokens.
LOGSIGMOID_BIAS = {"short": 0.0, "medium": 1.0, "long": 3.0}
LONG_PATH_HORIZONS = (256.0, 2048.0)


def _indent(lines: list[str], n: int) -> str:
    return "\n".join((" " * n + line) if line else "" for line in lines)


def _init_lines(g: MixerGenome) -> list[str]:
    L: list[str] = []
    if g.heads == "same":
        L.append("self.num_heads = num_heads")
    elif g.heads == "double":
        L += ["# Twice as many, narrower heads: more independent memories of smaller key size.",
              "self.num_heads = num_heads * 2 if d_model % (num_heads * 2) == 0 else num_heads"]
    else:
        L += ["# Half as many, wider heads: each memory holds more associations (state grows with head_dim^2).",
              "self.num_heads = num_heads // 2 if num_heads % 2 == 0 else num_heads"]
    L += ["self.head_dim = d_model // self.num_heads",
          "self.norm_eps = norm_eps",
          "dim = self.num_heads * self.head_dim",
          "h = self.num_heads"]
    if g.local_path != "none":
        L.append("self.local_window = local_window")
    if g.qk_shared:
        L += ["# One projection serves as both query and key: the freed parameters stay in the rest of the model.",
              "self.qk_proj = _linear(d_model, dim, ('embed', 'heads'), init_std, rngs)"]
    else:
        L += ["self.q_proj = _linear(d_model, dim, ('embed', 'heads'), init_std, rngs)",
              "self.k_proj = _linear(d_model, dim, ('embed', 'heads'), init_std, rngs)"]
    L.append("self.v_proj = _linear(d_model, dim, ('embed', 'heads'), init_std, rngs)")
    # (Parameters are created in the baselines' order, so the default genome reproduces them draw for draw.)
    if g.decay == "data":
        L.append("self.a_proj = _linear(d_model, h, ('embed', None), init_std, rngs)")
    if g.update == "delta":
        L.append("self.b_proj = _linear(d_model, h, ('embed', None), init_std, rngs)")
    if g.out_gate != "none":
        L.append("self.g_proj = _linear(d_model, dim, ('embed', 'heads'), init_std, rngs)")
    L += _conv_init_lines(g)
    if g.decay == "data":
        if g.decay_param == "mamba":
            (a_lo, a_hi), (dt_lo, dt_hi) = MAMBA_SPANS[g.decay_span]
            L += [f"# Mamba2-style decay rate exp(A_log) * softplus(W_a x + dt_bias); A in U[{a_lo:g}, {a_hi:g}],",
                  f"# dt in [{dt_lo:g}, {dt_hi:g}] sets the initial memory horizon ({g.decay_span}).",
                  f"a = jax.random.uniform(rngs.params(), (h,), jnp.float32, {a_lo!r}, {a_hi!r})",
                  "self.A_log = nnx.Param(jnp.log(jnp.maximum(a, 1e-4)), out_sharding=(None,), eager_sharding=False)",
                  f"self.dt_bias = nnx.Param(_dt_bias(h, rngs, {dt_lo!r}, {dt_hi!r}), out_sharding=(None,),",
                  "                          eager_sharding=False)"]
        else:
            b = LOGSIGMOID_BIAS[g.decay_span]
            L += [f"# GLA-style log decay logsigmoid(W_a x + a_bias) / 16; the bias {b:g} sets the initial horizon.",
                  f"self.a_bias = _vector(jnp.full((h,), {b!r}))"]
    elif g.decay == "fixed":
        lo, hi = FIXED_HORIZONS[g.decay_span]
        L += [f"# A learned, input-independent decay per head; horizons spread over {lo:g}-{hi:g} tokens at init.",
              f"horizons = jnp.exp(jnp.linspace(math.log({lo!r}), math.log({hi!r}), h))",
              "self.decay_logit = _vector(_inv_softplus(1.0 / horizons))"]
    if g.local_path == "conv":
        L += ["# The local branch: a wide causal depthwise convolution over the values.",
              "self.local_conv = _conv_weight(local_window, dim, rngs)"]
    if g.long_path == "slow_linear":
        lo, hi = LONG_PATH_HORIZONS
        L += [f"# The long branch forgets slowly (horizons {lo:g}-{hi:g} tokens), so distant context stays "
              "reachable.",
              f"horizons = jnp.exp(jnp.linspace(math.log({lo!r}), math.log({hi!r}), h))",
              "self.long_decay = _vector(_inv_softplus(1.0 / horizons))"]
    if g.num_paths > 1 and g.fusion == "static":
        L.append(f"self.fusion_logits = nnx.Param(jnp.zeros((h, {g.num_paths}), jnp.float32), "
                 "out_sharding=(None, None), eager_sharding=False)")
    elif g.num_paths > 1 and g.fusion == "gate":
        L += ["# A router reads each token and weighs the branches per head.",
              f"self.f_proj = _linear(d_model, h * {g.num_paths}, ('embed', None), init_std, rngs)"]
    if g.out_norm == "rms":
        L.append("self.o_norm = nnx.Param(jnp.ones((self.head_dim,), jnp.float32), out_sharding=('kv',), "
                 "eager_sharding=False)")
    L.append("self.o_proj = _linear(dim, d_model, ('heads', 'embed'), out_init_std or init_std, rngs)")
    return L


def _conv_init_lines(g: MixerGenome) -> list[str]:
    if not g.conv_size:
        return []
    L = []
    if g.qk_shared and "q" in g.conv_targets:
        L.append("self.qk_conv = _conv_weight(conv_size, dim, rngs)")
    else:
        L += [f"self.{t}_conv = _conv_weight(conv_size, dim, rngs)" for t in ("q", "k") if t in g.conv_targets]
    if "v" in g.conv_targets:
        L.append("self.v_conv = _conv_weight(conv_size, dim, rngs)")
    return L


def _qk_lines(g: MixerGenome) -> list[str]:
    conv_act = "'silu'" if g.feature_map == "silu" else "None"
    L = []
    if g.qk_shared:
        L.append("q = k = self.qk_proj(x)")
    else:
        L += ["q = self.q_proj(x)", "k = self.k_proj(x)"]
    if g.conv_size:
        if g.qk_shared and "q" in g.conv_targets:
            L.append(f"q = k = ops.short_conv(q, self.qk_conv[...], activation={conv_act})")
        else:
            for t in ("q", "k"):
                if t in g.conv_targets:
                    L.append(f"{t} = ops.short_conv({t}, self.{t}_conv[...], activation={conv_act})")
    convolved = bool(g.conv_size) and "q" in g.conv_targets
    fm = {"silu": "jax.nn.silu({})", "relu": "jax.nn.relu({})", "elu1": "jax.nn.elu({}) + 1.0"}.get(g.feature_map)
    if fm and not (g.feature_map == "silu" and convolved):
        L.append(f"# Feature map {g.feature_map} on queries and keys before the L2 norm.")
        L += [f"q = {fm.format('q')}", f"k = {fm.format('k')}"]
    return L


def _decay_lines(g: MixerGenome, var: str = "g") -> list[str]:
    if g.decay == "data" and g.decay_param == "mamba":
        return ["# The log decay is computed in float32: it is summed over time inside the kernel.",
                "a = self.a_proj(x).astype(jnp.float32) + self.dt_bias[...].astype(jnp.float32)",
                f"{var} = -jnp.exp(self.A_log[...].astype(jnp.float32)) * jax.nn.softplus(a)"]
    if g.decay == "data":
        return ["# The log decay is computed in float32: it is summed over time inside the kernel.",
                f"{var} = jax.nn.log_sigmoid(self.a_proj(x).astype(jnp.float32) + self.a_bias[...].astype(jnp.float32)) / 16.0"]
    if g.decay == "fixed":
        return [f"{var} = jnp.broadcast_to(-jax.nn.softplus(self.decay_logit[...].astype(jnp.float32)), (b, t, h))"]
    return []


def _call_lines(g: MixerGenome) -> list[str]:
    L = ["b, t, _ = x.shape", "h, d = self.num_heads, self.head_dim"]
    L += _qk_lines(g)
    L.append("v = self.v_proj(x)")
    if g.conv_size and "v" in g.conv_targets:
        L.append("v = ops.short_conv(v, self.v_conv[...], activation='silu')")
    else:
        L.append("v = jax.nn.silu(v)")
    if g.local_path == "conv":
        L.append("v_flat = v")
    L += ["q, k, v = q.reshape(b, t, h, d), k.reshape(b, t, h, d), v.reshape(b, t, h, d)",
          "qn, kn = ops.l2norm(q), ops.l2norm(k)"]
    if g.update == "delta":
        scale = "2.0 * " if g.beta == "sigmoid2" else ""
        if g.beta == "sigmoid2":
            L.append("# beta in (0, 2): the transition I - beta k k^T may have a negative eigenvalue (state tracking).")
        L.append(f"beta = {scale}jax.nn.sigmoid(self.b_proj(x))")
    L += _decay_lines(g)
    if g.update == "delta":
        L.append("o = ops.gated_delta_rule(qn, kn, v, g, beta)" if g.has_decay else "o = ops.delta_rule(qn, kn, v, beta)")
    else:
        if not g.has_decay:
            L.append("g = jnp.zeros((b, t, h), jnp.float32)  # no forgetting: a plain running sum")
        L.append("o = ops.simple_gla(qn, kn, v, g)")
    paths = ["o"]
    if g.local_path == "swa":
        L += ["# Local branch: exact softmax attention over the last `local_window` tokens (linear in T).",
              "o_local = ops.attention(ops.rotary(q), ops.rotary(k), v, causal=True, "
              "sliding_window=self.local_window,",
              "                        scale=1.0 / math.sqrt(d))"]
        paths.append("o_local")
    elif g.local_path == "conv":
        L.append("o_local = ops.short_conv(v_flat, self.local_conv[...], activation=None).reshape(b, t, h, d)")
        paths.append("o_local")
    if g.long_path == "slow_linear":
        L += ["g_long = jnp.broadcast_to(-jax.nn.softplus(self.long_decay[...].astype(jnp.float32)), (b, t, h))",
              "# (1 - decay) turns the slow running sum into a running average of comparable scale.",
              "o_long = ops.simple_gla(qn, kn, v, g_long) * (1.0 - jnp.exp(g_long))[..., None].astype(v.dtype)"]
        paths.append("o_long")
    if len(paths) > 1:
        if g.fusion == "sum":
            L.append(f"o = {' + '.join(paths)}")
        else:
            if g.fusion == "static":
                L.append("w = jax.nn.softmax(self.fusion_logits[...].astype(jnp.float32), axis=-1)[None, None]  # [1, 1, h, paths]")
            else:
                L.append(f"w = jax.nn.softmax(self.f_proj(x).astype(jnp.float32).reshape(b, t, h, {len(paths)}), "
                         "axis=-1)")
            terms = " + ".join(f"w[..., {i}, None] * {p}" for i, p in enumerate(paths))
            L.append(f"o = ({terms}).astype(v.dtype)")
    if g.out_gate != "none":
        L.append("gate = self.g_proj(x).reshape(b, t, h, d)")
    if g.out_norm == "rms" and g.out_gate == "silu":
        L.append("o = ops.gated_rms_norm(o, gate, self.o_norm[...], eps=self.norm_eps)")
    else:
        if g.out_norm == "rms":
            L.append("o = ops.rms_norm(o, self.o_norm[...], eps=self.norm_eps)")
        if g.out_gate == "silu":
            L.append("o = o * jax.nn.silu(gate)")
        elif g.out_gate == "sigmoid":
            L.append("o = o * jax.nn.sigmoid(gate)")
    L.append("return self.o_proj(o.reshape(b, t, h * d))")
    return L


def render_program(genome: MixerGenome, *, title: str = "", notes: str = "") -> str:
    """The design program of `genome`; `title` and `notes` go into the module docstring."""
    doc = textwrap.fill(f"{title or 'A delta-rule family mixer'}: {genome.describe()}.", 110)
    if notes:
        doc += "\n\n" + textwrap.fill(notes, 110)
    doc += "\n\nRendered from the genome below by the offline evolutionary proposer (aira_jax.discovery.offline)."
    header = _HEADER + (_DT_BIAS if genome.decay == "data" and genome.decay_param == "mamba" else "")
    kwargs = ["d_model: int", "num_heads: int", "*", "rngs: nnx.Rngs"]
    if genome.conv_size:
        kwargs.append(f"conv_size: int = {genome.conv_size}")
    if genome.local_path != "none":
        kwargs.append(f"local_window: int = {genome.local_window}")
    kwargs += ["norm_eps: float = 1e-5", "init_std: float = 0.02", "out_init_std: float | None = None", "**kwargs"]
    signature = "  def __init__(self, " + ", ".join(kwargs) + "):"
    if len(signature) > 116:
        signature = "  def __init__(self, " + ", ".join(kwargs[:4]) + ",\n               " + ", ".join(kwargs[4:]) + "):"
    return (f'"""{doc}\n"""\n{GENOME_MARK} {genome.to_json()}\n{header}\n\n'
            f'class Mixer(nnx.Module):\n  """{textwrap.shorten(genome.describe(), 100)}"""\n\n'
            f"{signature}\n{_indent(_init_lines(genome), 4)}\n\n"
            f"  def __call__(self, x: jax.Array) -> jax.Array:\n{_indent(_call_lines(genome), 4)}\n")
