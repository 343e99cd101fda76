"""The paper's network (encoder → L LRU blocks → per-step decoder), its losses, and the online
rule run as it would run online: one `lax.scan` over time with streaming eligibility traces.

Shape notation: B batch, T steps, I input channels, H d_model, N d_hidden, O outputs, L layers.

Two ways to get the online gradient, which must agree (sheet O2):
  * `Network.__call__(x, rule=GradientRule.ONLINE)` then plain autodiff: the stop-gradient
    formulation in `innerloop_core.lru` (what training uses: O(T·N) memory per layer);
  * `stream_grads(...)`: at every step t the forward of all layers for x_t only, the
    instantaneous backward of the step-t loss (δ_t at every layer's h_t), and the trace
    updates; nothing is stored over time, so memory does not grow with T (what the paper's
    memory claim is about; the reference).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from innerloop_core.dense_rnn import GRU, DenseRNN
from innerloop_core.lru import (
  BlockActivation,
  Dense,
  GradientRule,
  LRUBlock,
  online_trace_grads,
  online_trace_step,
  pool_st,
  zero_traces,
)
from innerloop_core.scans import ScanImpl

sg = jax.lax.stop_gradient


class Cell(enum.Enum):
  LRU = "lru"  # diagonal complex linear recurrent unit
  DENSE_LINEAR = "dense_linear"  # dense linear RNN baseline (its ONLINE rule is SnAp-1)
  GRU = "gru"  # GRU baseline with N = d_model (its ONLINE rule is SnAp-1)
  # the same GRU, SnAp-1 with the reference code's σ(a)σ(1 − a) (to mirror the published rows)
  GRU_REFERENCE_SNAP = "gru_reference_snap"


class Readout(enum.Enum):
  PER_STEP = "per_step"  # decoder on every step's features (copy task)
  POOL_ST = "pool_st"  # decoder on the causal running mean, straight-through (LRA)


class ReluMLP(nnx.Module):
  """Per-step readout Dense → ReLU → Dense (Table 1's one-layer GRU: width 1072)."""

  def __init__(self, d_input: int, width: int, d_output: int, *, key: jax.Array):
    k_hidden, k_out = jax.random.split(key)
    self.hidden = Dense(d_input, width, key=k_hidden)
    self.out = Dense(width, d_output, key=k_out)

  def __call__(self, z: jax.Array) -> jax.Array:
    """[..., H] -> [..., O]."""
    return self.out(jax.nn.relu(self.hidden(z)))


class Network(nnx.Module):
  """Dense encoder → L residual LRU blocks → per-step decoder (logits): Dense, or a ReLU MLP
  of width `readout_width` when it is > 0."""

  def __init__(
    self,
    d_input: int,
    d_output: int,
    *,
    d_model: int,
    d_hidden: int,
    num_layers: int,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    cell: Cell = Cell.LRU,
    activation: BlockActivation = BlockActivation.FULL_GLU,
    readout_width: int = 0,
    key: jax.Array,
  ):
    k_enc, k_dec, k_blocks = jax.random.split(key, 3)
    self.encoder = Dense(d_input, d_model, key=k_enc)
    blocks = []
    for k in jax.random.split(k_blocks, num_layers):
      # the dense cell's key is folded from the block's, so LRU networks keep their init
      dense = None
      if cell is Cell.DENSE_LINEAR:
        dense = DenseRNN(d_model, d_hidden, key=jax.random.fold_in(k, 1))
      elif cell in (Cell.GRU, Cell.GRU_REFERENCE_SNAP):
        derivative = "reference" if cell is Cell.GRU_REFERENCE_SNAP else "exact"
        dense = GRU(d_model, key=jax.random.fold_in(k, 1), snap_derivative=derivative)
      blocks.append(
        LRUBlock(
          d_model,
          d_hidden,
          r_min=r_min,
          r_max=r_max,
          max_phase=max_phase,
          key=k,
          recurrent=dense,
          activation=activation,
        )
      )
    self.blocks = nnx.List(blocks)
    if readout_width > 0:
      self.decoder = ReluMLP(d_model, readout_width, d_output, key=k_dec)
    else:
      self.decoder = Dense(d_model, d_output, key=k_dec)

  def block_masks(self, dropout_key, batch: tuple[int, ...], rate: float) -> list:
    """Per-block dropout masks [*batch, 1, H] (None entries when no dropout)."""
    if dropout_key is None or rate <= 0.0:
      return [None] * len(self.blocks)
    keys = jax.random.split(dropout_key, len(self.blocks))
    return [b.masks(k, batch, rate) for b, k in zip(self.blocks, keys, strict=True)]

  def __call__(
    self,
    x: jax.Array,
    *,
    rule: GradientRule = GradientRule.BPTT,
    readout: Readout = Readout.PER_STEP,
    dropout_key: jax.Array | None = None,
    dropout_rate: float = 0.0,
    impl: ScanImpl = ScanImpl.AUTO,
  ) -> jax.Array:
    """logits [B, T, O] for x [B, T, I]."""
    masks = self.block_masks(dropout_key, x.shape[:-2], dropout_rate)
    z = self.encoder(x)
    for block, m in zip(self.blocks, masks, strict=True):
      z = block.post(z, block.lru(block.norm(z), rule=rule, impl=impl), m)
    if readout is Readout.POOL_ST:
      z = pool_st(z)
    return self.decoder(z)


# ---------------------------------------------------------------------------------------------
# Losses. Each is a mean over masked steps then batch; `*_step` is step t's share of it, so that
# the sum over t of the step losses is the sequence loss (what the online learner needs).


def copy_step_loss(logits_t, targets_t, weight_t) -> jax.Array:
  """Per-bit 2-class cross-entropy at one step: logits [B, 2K], targets [B, K] int, weight = the
  step's mask / number of masked steps."""
  logits = logits_t.reshape(logits_t.shape[:-1] + (-1, 2))
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets_t)  # [B, K]
  return weight_t * jnp.mean(ce)


def copy_loss(logits, targets, mask) -> jax.Array:
  """logits [B, T, 2K], targets [B, T, K], mask [T] bool."""
  weights = mask.astype(jnp.float32) / jnp.sum(mask)
  per_step = jax.vmap(copy_step_loss, in_axes=(1, 1, 0))(logits, targets, weights)
  return jnp.sum(per_step)


def copy_bit_accuracy(logits, targets, mask) -> jax.Array:
  """Fraction of the target bits predicted right over the masked steps, all sequences."""
  pred = jnp.argmax(logits.reshape(logits.shape[:-1] + (-1, 2)), axis=-1)
  hits = (pred == targets).astype(jnp.float32)  # [B, T, K]
  return jnp.sum(jnp.mean(hits, axis=(0, 2)) * mask) / jnp.sum(mask)


def class_step_loss(logits_t, labels, weight_t) -> jax.Array:
  """Classification with a loss at every valid step: logits [B, C], labels [B], weight [B] =
  valid(t) / (number of valid steps · B)."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits_t, labels)
  return jnp.sum(weight_t * ce)


def class_weights(lengths: jax.Array, steps: int) -> jax.Array:
  """[T, B]: 1 / (length_b · B) on the valid steps of sequence b, else 0."""
  valid = jnp.arange(steps)[:, None] < lengths[None, :]
  return valid / (lengths[None, :].astype(jnp.float32) * lengths.shape[0])


def class_loss(logits, labels, lengths) -> jax.Array:
  """logits [B, T, C], labels [B], lengths [B]: mean over valid steps, then batch."""
  weights = class_weights(lengths, logits.shape[1])
  return jnp.sum(jax.vmap(class_step_loss, in_axes=(1, None, 0))(logits, labels, weights))


def class_accuracy(logits, labels, lengths) -> jax.Array:
  """Accuracy of the prediction at each sequence's last valid step (the running mean under
  pool_st: the paper's reported accuracy)."""
  last = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]
  return jnp.mean((jnp.argmax(last, axis=-1) == labels).astype(jnp.float32))


# ---------------------------------------------------------------------------------------------
# The online rule, streamed


def stream_grads(
  model: Network,
  x: jax.Array,
  step_loss: Callable[[jax.Array, jax.Array], jax.Array],
  *,
  rule: GradientRule = GradientRule.ONLINE,
  readout: Readout = Readout.PER_STEP,
  dropout_key: jax.Array | None = None,
  dropout_rate: float = 0.0,
) -> tuple[jax.Array, Any]:
  """(loss, grads as an nnx.State) of Σ_t step_loss(logits_t, t) under `rule` (ONLINE,
  ONE_STEP or SPATIAL), computed forward in time: a lax.scan over t whose carry is each
  layer's state h, its eligibility traces, the pool_st running sum and the gradient sums.

  At step t every layer's h_t = λ⊙h_{t−1} + γ⊙B u_t is formed with the recurrence cut
  (stop-gradient) but the instantaneous input path kept, so one VJP of the step-t loss gives
  δ_t at every layer and the instantaneous gradients of C, D, GLU, norms, encoder and decoder;
  λ, γ, B get Σ_t Re δ_t ⊙ trace_t (innerloop_core.lru.online_trace_grads).
  """
  if rule is GradientRule.BPTT:
    raise ValueError("stream_grads computes online rules; BPTT needs the backward pass")
  graphdef, params = nnx.split(model)
  batch, steps = x.shape[0], x.shape[1]
  d_model, d_hidden = model.blocks[0].lru.d_model, model.blocks[0].lru.d_hidden
  num_layers = len(model.blocks)
  masks = model.block_masks(dropout_key, (batch,), dropout_rate)
  masks = [None if m is None else (m[0][:, 0], m[1][:, 0]) for m in masks]

  def step_value(p, probes, h_prev, pool_sum, x_t, t):
    net = nnx.merge(graphdef, p)
    z = net.encoder(x_t)
    hs, us = [], []
    for block, probe, h_old, m in zip(net.blocks, probes, h_prev, masks, strict=True):
      u = block.norm(z)
      lam, _ = block.lru.eigenvalues()
      inst = block.lru.drive(u, frozen=True)
      h = sg(lam * h_old + block.lru.drive(u)) + (inst - sg(inst)) + probe
      hs.append(sg(h))
      us.append(sg(u))
      z = block.post(z, block.lru.readout(h, u), m)
    new_sum = pool_sum
    if readout is Readout.POOL_ST:
      new_sum = pool_sum + sg(z)
      z = z + sg(new_sum / (t + 1).astype(z.dtype) - z)
    return step_loss(net.decoder(z), t), (hs, us, new_sum)

  value_and_grad = jax.value_and_grad(step_value, argnums=(0, 1), has_aux=True)

  def step(carry, inp):
    h_prev, traces, pool_sum, acc, total = carry
    x_t, t = inp
    probes = [jnp.zeros((batch, d_hidden), jnp.complex64) for _ in range(num_layers)]
    (loss_t, (hs, us, pool_sum)), (g_params, deltas) = value_and_grad(
      params, probes, h_prev, pool_sum, x_t, t
    )
    g = nnx.to_pure_dict(g_params)
    new_traces = []
    for layer in range(num_layers):
      lru = params["blocks"][layer]["lru"]
      lam, gamma = model.blocks[layer].lru.eigenvalues()
      b_mat = lru["B_re"][...] + 1j * lru["B_im"][...]
      bx = us[layer].astype(jnp.complex64) @ b_mat.T
      tr = online_trace_step(traces[layer], lam, gamma, h_prev[layer], bx, us[layer], rule)
      new_traces.append(tr)
      extra = online_trace_grads(
        deltas[layer], tr, lru["nu_log"][...], lru["theta_log"][...], lru["gamma_log"][...]
      )
      for name, value in extra.items():
        g["blocks"][layer]["lru"][name] = g["blocks"][layer]["lru"][name] + value
    acc = jax.tree.map(jnp.add, acc, g)
    return (hs, new_traces, pool_sum, acc, total + loss_t), None

  acc0 = jax.tree.map(jnp.zeros_like, nnx.to_pure_dict(params))
  carry = (
    [jnp.zeros((batch, d_hidden), jnp.complex64) for _ in range(num_layers)],
    [zero_traces(batch, d_hidden, d_model) for _ in range(num_layers)],
    jnp.zeros((batch, d_model), jnp.float32),
    acc0,
    jnp.zeros((), jnp.float32),
  )
  (_, _, _, acc, total), _ = jax.lax.scan(step, carry, (jnp.moveaxis(x, 1, 0), jnp.arange(steps)))
  grads = nnx.state(nnx.merge(graphdef, params))
  nnx.replace_by_pure_dict(grads, acc)
  return total, grads


def flat_vector(state, exclude: tuple[str, ...] = ()) -> jax.Array:
  """All leaves of a gradient State as one vector (for cosines and norm ratios), except those
  of the top-level submodules named in `exclude` (e.g. "encoder")."""
  leaves = jax.tree_util.tree_leaves_with_path(state)
  return jnp.concatenate([jnp.ravel(v) for path, v in leaves if path[0].key not in exclude])


def alignment(g: Any, g_ref: Any, exclude: tuple[str, ...] = ()) -> tuple[jax.Array, jax.Array]:
  """(cosine, ‖g‖ / ‖g_ref‖) of two gradients over all parameters (but the `exclude`d
  submodules')."""
  a, b = flat_vector(g, exclude), flat_vector(g_ref, exclude)
  return jnp.dot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b)), jnp.linalg.norm(
    a
  ) / jnp.linalg.norm(b)


def stream_forward(model: Network, x: jax.Array, *, readout: Readout = Readout.PER_STEP):
  """Inference as a recurrent network runs it online: a lax.scan over t carrying only each
  layer's state (and the pool_st sum); returns the logits of the last step [B, O]. Memory does
  not grow with T beyond the input itself (the memory benchmark's streaming inference)."""
  batch = x.shape[0]
  d_model, d_hidden = model.blocks[0].lru.d_model, model.blocks[0].lru.d_hidden

  def step(carry, inp):
    hs, pool_sum = carry
    x_t, t = inp
    z = model.encoder(x_t)
    new_hs = []
    for block, h_old in zip(model.blocks, hs, strict=True):
      u = block.norm(z)
      lam, _ = block.lru.eigenvalues()
      h = lam * h_old + block.lru.drive(u)
      new_hs.append(h)
      z = block.post(z, block.lru.readout(h, u))
    if readout is Readout.POOL_ST:
      pool_sum = pool_sum + z
      z = pool_sum / (t + 1).astype(z.dtype)
    return (new_hs, pool_sum), model.decoder(z)

  h0 = [jnp.zeros((batch, d_hidden), jnp.complex64) for _ in model.blocks]
  carry = (h0, jnp.zeros((batch, d_model), jnp.float32))
  (_, _), logits = jax.lax.scan(step, carry, (jnp.moveaxis(x, 1, 0), jnp.arange(x.shape[1])))
  return logits[-1]
