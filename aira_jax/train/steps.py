"""The jitted train and eval steps."""
from __future__ import annotations

from typing import Any, Callable

from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import optax

from aira_jax.train import schedules
from aira_jax.train import sharding as shd
from aira_jax.train.state import StateSetup, TrainState, cast_floating


def next_token_nll(graphdef: nnx.GraphDef, params: Any, rest: Any, tokens: jax.Array,
                   compute_dtype: Any) -> tuple[jax.Array, Any]:
  """Per-position next-token NLL [B, T] in float32 (tokens [B, T+1]), and the updated rest."""
  model = nnx.merge(graphdef, cast_floating(params, compute_dtype), rest)
  logits = model(tokens[:, :-1])
  nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                        tokens[:, 1:])
  _, _, new_rest = nnx.split(model, nnx.Param, ...)
  return nll, nnx.to_pure_dict(new_rest)


def make_loss_and_grad(graphdef: nnx.GraphDef, *, compute_dtype: Any) -> Callable:
  """(params, rest, tokens) -> (mean next-token loss, grads w.r.t. params): the step's forward and backward
  without the optimizer (for comparing op paths). A new function per call, so each jit traces afresh."""

  def loss_and_grad(params, rest, tokens):
    def loss(p):
      nll, _ = next_token_nll(graphdef, p, rest, tokens, compute_dtype)
      return jnp.mean(nll)
    return jax.value_and_grad(loss)(params)
  return loss_and_grad


def make_train_step(setup: StateSetup, tx: optax.GradientTransformation, mesh: Mesh, *,
                    compute_dtype: Any, grad_accum: int = 1) -> Callable:
  """jit(train_step)(state, batch, lr) -> (state, metrics); the input state is donated.

  Gradients are taken w.r.t. the fp32 master weights; the cast to `compute_dtype` sits inside the
  differentiated function, so its transpose accumulates into fp32.
  """
  graphdef = setup.graphdef

  def loss_fn(params, rest, tokens):
    nll, new_rest = next_token_nll(graphdef, params, rest, tokens, compute_dtype)
    return jnp.mean(nll), new_rest

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state: TrainState, batch: dict, lr: jax.Array):
    tokens = batch['tokens']
    if grad_accum == 1:
      (loss, rest), grads = grad_fn(state.params, state.rest, tokens)
    else:
      b = tokens.shape[0]
      # Row r of microbatch i is global row r * grad_accum + i: a reshape that keeps the leading
      # (sharded) dim intact, so each device's microbatches come from its own rows.
      micro = tokens.reshape(b // grad_accum, grad_accum, -1).swapaxes(0, 1)
      micro = jax.lax.with_sharding_constraint(micro, NamedSharding(mesh, P(None, shd.BATCH_AXES)))

      def body(carry, toks):
        g_acc, l_acc, rest = carry
        (l, rest), g = grad_fn(state.params, rest, toks)
        return (jax.tree.map(jnp.add, g_acc, g), l_acc + l, rest), None

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (grads, loss, rest), _ = jax.lax.scan(body, (zeros, jnp.zeros((), jnp.float32), state.rest),
                                            micro)
      grads = jax.tree.map(lambda g: g / grad_accum, grads)
      loss = loss / grad_accum
    opt_state = schedules.set_learning_rate(state.opt_state, lr)
    updates, opt_state = tx.update(grads, opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rest=rest)
    metrics = {'loss': loss, 'grad_norm': optax.tree.norm(grads),
               'param_norm': optax.tree.norm(params)}
    return new_state, metrics

  repl = shd.replicated(mesh)
  batch_sh = {'tokens': shd.batch_sharding(mesh)}
  return jax.jit(train_step, in_shardings=(setup.shardings, batch_sh, repl),
                 out_shardings=(setup.shardings, repl), donate_argnums=(0,))


def make_eval_step(setup: StateSetup, mesh: Mesh, *, compute_dtype: Any) -> Callable:
  """jit(eval_step)(params, rest, batch) -> sums of weighted NLL, weights and target bytes."""
  graphdef = setup.graphdef

  def eval_step(params, rest, batch):
    nll, _ = next_token_nll(graphdef, params, rest, batch['tokens'], compute_dtype)
    w = batch['weights'].astype(jnp.float32)
    return {'nll_sum': jnp.sum(nll * w), 'weight_sum': jnp.sum(w),
            'byte_sum': jnp.sum(batch['bytes'].astype(jnp.float32) * w)}

  b = shd.batch_sharding(mesh)
  return jax.jit(eval_step,
                 in_shardings=(setup.shardings.params, setup.shardings.rest,
                               {'tokens': b, 'weights': b, 'bytes': b}),
                 out_shardings=shd.replicated(mesh))
