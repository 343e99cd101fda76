"""Sequences of random dynamical systems (von Oswald et al. 2023, "mesa-optimization").

Shape notation: B sequences, T inputs per sequence (T + 1 states), N observed state width,
Nh hidden state width, D token width.

A batch holds the states s_1..s_{T+1} of B systems, each with its own teacher; a model reads
s_1..s_T and predicts s_2..s_{T+1} (``inputs``/``targets``). The published figures were made
with the authors' code, which differs from the paper's text in several places; each
difference is a named option whose default is the code's convention (sheet §3.1):

  InitState           s_1 ~ U(−1, 1) (code) | N(0, 1) (paper)
  TokenLayout         e_t = [0, s_t, s_t, s_{t−1}] (code) | [Φ_0 s_t, s_t, s_{t−1}], Φ_0 = 0
  ObsMatrixScale      C = 0.5·N(0, 1) (code) | N(0, 0.5), variance 0.5 (paper)
  NonlinearConvention h' = W u/‖u‖, u = GELU(hA)B (code) | h' = B·GELU(Ah) (paper)
  FewshotX            x ~ U(−1, 1) (code) | N(0, I) (paper)

The generators are jitted (sizes and options static): called eagerly, as for fixed test sets,
each would otherwise compile its time scan afresh on every call.
"""

from __future__ import annotations

import enum
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from innerloop_core.config import parse_enum

NOISE_STD = 0.01  # transition and observation noise of every generator
STATE_CLIP = 10.0  # s_{t+1} = clip(W s_t + noise, ±10) in the fully observed code
CONTRACTING_CLIP = 2.0
FIXED_W_SEED = 42  # the one teacher of the fixed-W control (E.2)
NONLINEAR_A_SEED, NONLINEAR_B_SEED = 421, 422  # the fixed MLP of the nonlinear task
NONLINEAR_HIDDEN = 40
NONLINEAR_SCALE = 1.1


class InitState(enum.Enum):
  UNIFORM = "uniform"  # code: s_1 ~ U(−1, 1)^N
  NORMAL = "normal"  # paper: h_1 ~ N(0, I)


class TokenLayout(enum.Enum):
  CODE = "code"  # [0, s_t, s_t, s_{t−1}] ∈ R^{4N}: a zero slot, two copies of s_t, s_{t−1}
  PAPER = "paper"  # [Φ_0 s_t, s_t, s_{t−1}] ∈ R^{3N} with Φ_0 = 0


class ObsMatrixScale(enum.Enum):
  CODE = "code"  # C = 0.5·N(0, 1): standard deviation 0.5
  PAPER = "paper"  # "N(0, 0.5)" read as variance 0.5


class NonlinearConvention(enum.Enum):
  CODE = "code"  # h' = W u/‖u‖ + noise, u = GELU(h A) B; A, B ~ 1.1·N(0, 1); h_1 ~ U(±0.25)
  PAPER = "paper"  # h' = B·GELU(A h) + noise, A, B ~ N(0, 1.1) (variance), unnormalised


class FewshotX(enum.Enum):
  UNIFORM = "uniform"  # code: x ~ U(−1, 1)^N
  NORMAL = "normal"  # paper: x ~ N(0, I)


class TaskFamily(enum.Enum):
  """The dynamical-system families of the paper (``sample_states`` dispatches on it)."""

  LINEAR = "linear"  # fully observed, a new random orthogonal W per sequence
  FIXED_W = "fixed_w"  # fully observed, one orthogonal W for every sequence (E.2)
  CONTRACTING = "contracting"  # W = U diag(λ) U⁻¹, λ ~ U(0.3, 0.9) (E.1)
  PARTIAL = "partial"  # partially observed: s_t = C h_t + noise
  NONLINEAR = "nonlinear"  # h' = W u/‖u‖, u = GELU(h A) B with a fixed MLP


class Sequences(NamedTuple):
  """States s_1..s_{T+1} [B, T+1, N]; ``inputs`` are s_1..s_T, ``targets`` s_2..s_{T+1}."""

  states: jax.Array

  @property
  def inputs(self) -> jax.Array:
    return self.states[:, :-1]

  @property
  def targets(self) -> jax.Array:
    return self.states[:, 1:]


def _positive(name: str, value: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{name} must be an int >= 1; got {value!r}")
  return value


def orthogonal_matrices(key: jax.Array, batch_size: int, dim: int) -> jax.Array:
  """B Haar-random orthogonal matrices [B, N, N]."""
  return jax.random.orthogonal(key, dim, (batch_size,), jnp.float32)


def _initial_state(key, batch_size, dim, init: InitState, half_width: float = 1.0):
  if init is InitState.UNIFORM:
    return jax.random.uniform(key, (batch_size, dim), jnp.float32, -half_width, half_width)
  return jax.random.normal(key, (batch_size, dim), jnp.float32)


def roll_out_linear(
  key: jax.Array, w: jax.Array, s_1: jax.Array, length: int, clip: float
) -> jax.Array:
  """s_{t+1} = clip(W s_t + 0.01 ε, ±clip) for t = 1..T.  w [B, N, N], s_1 [B, N] -> [B, T+1, N]."""

  def step(s, k):
    nxt = jnp.einsum("bij,bj->bi", w, s) + NOISE_STD * jax.random.normal(k, s.shape, s.dtype)
    nxt = jnp.clip(nxt, -clip, clip)
    return nxt, nxt

  _, rest = jax.lax.scan(step, s_1, jax.random.split(key, length))
  return jnp.concatenate([s_1[:, None], jnp.swapaxes(rest, 0, 1)], axis=1)


@functools.partial(jax.jit, static_argnames=("batch_size", "length", "dim", "init", "fixed_w"))
def linear_sequences(
  key: jax.Array,
  batch_size: int,
  length: int = 50,
  dim: int = 10,
  *,
  init: InitState | str = InitState.UNIFORM,
  fixed_w: bool = False,
) -> Sequences:
  """Fully observed linear systems with a random orthogonal W (new per sequence, or the one
  of key 42 for every sequence with ``fixed_w``), clipped to ±10 (sheet §3.1)."""
  b, t, n = _positive("batch_size", batch_size), _positive("length", length), _positive("dim", dim)
  init = parse_enum(init, InitState, "init")
  k_w, k_s, k_noise = jax.random.split(key, 3)
  if fixed_w:
    w = jnp.broadcast_to(orthogonal_matrices(jax.random.key(FIXED_W_SEED), 1, n), (b, n, n))
  else:
    w = orthogonal_matrices(k_w, b, n)
  return Sequences(roll_out_linear(k_noise, w, _initial_state(k_s, b, n, init), t, STATE_CLIP))


def contracting_matrices(key: jax.Array, batch_size: int, dim: int) -> jax.Array:
  """W = U diag(λ) U⁻¹, U ~ N(0, 1), λ ~ U(0.3, 0.9) with one λ pinned at 0.9 (E.1)."""
  k_u, k_l = jax.random.split(key)
  u = jax.random.normal(k_u, (batch_size, dim, dim), jnp.float32)
  lam = jax.random.uniform(k_l, (batch_size, dim), jnp.float32, 0.3, 0.9).at[:, 0].set(0.9)
  return jnp.einsum("bij,bj,bjk->bik", u, lam, jnp.linalg.inv(u))


@functools.partial(jax.jit, static_argnames=("batch_size", "length", "dim", "init"))
def contracting_sequences(
  key: jax.Array,
  batch_size: int,
  length: int = 50,
  dim: int = 10,
  *,
  init: InitState | str = InitState.UNIFORM,
) -> Sequences:
  """Contracting linear systems, states clipped to ±2 (Appendix E.1)."""
  b, t, n = _positive("batch_size", batch_size), _positive("length", length), _positive("dim", dim)
  init = parse_enum(init, InitState, "init")
  k_w, k_s, k_noise = jax.random.split(key, 3)
  w = contracting_matrices(k_w, b, n)
  return Sequences(
    roll_out_linear(k_noise, w, _initial_state(k_s, b, n, init), t, CONTRACTING_CLIP)
  )


@functools.partial(
  jax.jit, static_argnames=("batch_size", "length", "obs_dim", "hidden_dim", "init", "obs_scale")
)
def partial_sequences(
  key: jax.Array,
  batch_size: int,
  length: int = 50,
  obs_dim: int = 5,
  hidden_dim: int = 15,
  *,
  init: InitState | str = InitState.UNIFORM,
  obs_scale: ObsMatrixScale | str = ObsMatrixScale.CODE,
) -> Sequences:
  """Partially observed systems: h_{t+1} = W h_t + 0.01ε (W orthogonal), s_t = C h_t + 0.01ε
  with a new C [N, Nh] per sequence. Returns the observations s_1..s_{T+1} [B, T+1, N]."""
  b, t = _positive("batch_size", batch_size), _positive("length", length)
  n, nh = _positive("obs_dim", obs_dim), _positive("hidden_dim", hidden_dim)
  init = parse_enum(init, InitState, "init")
  obs_scale = parse_enum(obs_scale, ObsMatrixScale, "obs_scale")
  k_w, k_c, k_h, k_noise, k_obs = jax.random.split(key, 5)
  w = orthogonal_matrices(k_w, b, nh)
  std = 0.5 if obs_scale is ObsMatrixScale.CODE else jnp.sqrt(0.5)
  c = std * jax.random.normal(k_c, (b, n, nh), jnp.float32)
  h = roll_out_linear(k_noise, w, _initial_state(k_h, b, nh, init), t, STATE_CLIP)
  s = jnp.einsum("bij,btj->bti", c, h)
  return Sequences(s + NOISE_STD * jax.random.normal(k_obs, s.shape, s.dtype))


def nonlinear_mlp(
  dim: int = 10, convention: NonlinearConvention | str = NonlinearConvention.CODE
) -> tuple[jax.Array, jax.Array]:
  """The fixed MLP weights A [N, 40], B [40, N] of the nonlinear task (keys 421 / 422)."""
  convention = parse_enum(convention, NonlinearConvention, "convention")
  scale = NONLINEAR_SCALE if convention is NonlinearConvention.CODE else jnp.sqrt(NONLINEAR_SCALE)
  a = scale * jax.random.normal(jax.random.key(NONLINEAR_A_SEED), (dim, NONLINEAR_HIDDEN))
  b = scale * jax.random.normal(jax.random.key(NONLINEAR_B_SEED), (NONLINEAR_HIDDEN, dim))
  return a, b


@functools.partial(jax.jit, static_argnames=("batch_size", "length", "dim", "convention"))
def nonlinear_sequences(
  key: jax.Array,
  batch_size: int,
  length: int = 50,
  dim: int = 10,
  *,
  convention: NonlinearConvention | str = NonlinearConvention.CODE,
) -> Sequences:
  """Nonlinear systems through a fixed GELU MLP (sheet §3.1, "Nonlinear").

  Code: h_{t+1} = W u/‖u‖ + 0.01ε, u = GELU(h_t A) B, a new orthogonal W per sequence,
  h_1 ~ U(−0.25, 0.25). Paper: h_{t+1} = B·GELU(A h_t) + 0.01ε (no W, no normalisation).
  """
  b, t, n = _positive("batch_size", batch_size), _positive("length", length), _positive("dim", dim)
  convention = parse_enum(convention, NonlinearConvention, "convention")
  mlp_a, mlp_b = nonlinear_mlp(n, convention)
  k_w, k_s, k_noise = jax.random.split(key, 3)
  w = orthogonal_matrices(k_w, b, n)
  if convention is NonlinearConvention.CODE:
    h_1 = jax.random.uniform(k_s, (b, n), jnp.float32, -0.25, 0.25)
  else:
    h_1 = jax.random.normal(k_s, (b, n), jnp.float32)

  def step(h, k):
    if convention is NonlinearConvention.CODE:
      u = jax.nn.gelu(h @ mlp_a) @ mlp_b
      mean = jnp.einsum("bij,bj->bi", w, u / jnp.linalg.norm(u, axis=-1, keepdims=True))
    else:
      mean = jax.nn.gelu(h @ mlp_a) @ mlp_b  # B·GELU(A h) in column-vector notation
    nxt = mean + NOISE_STD * jax.random.normal(k, h.shape, h.dtype)
    return nxt, nxt

  _, rest = jax.lax.scan(step, h_1, jax.random.split(k_noise, t))
  return Sequences(jnp.concatenate([h_1[:, None], jnp.swapaxes(rest, 0, 1)], axis=1))


def sample_states(
  key: jax.Array,
  family: TaskFamily | str,
  batch_size: int,
  length: int = 50,
  dim: int = 10,
  *,
  init: InitState | str = InitState.UNIFORM,
) -> Sequences:
  """One batch of the named family at its code-convention settings (``dim`` is the observed
  width; the partially observed family keeps Nh = 3·N hidden units, 15 for N = 5)."""
  family = parse_enum(family, TaskFamily, "family")
  if family is TaskFamily.LINEAR:
    return linear_sequences(key, batch_size, length, dim, init=init)
  if family is TaskFamily.FIXED_W:
    return linear_sequences(key, batch_size, length, dim, init=init, fixed_w=True)
  if family is TaskFamily.CONTRACTING:
    return contracting_sequences(key, batch_size, length, dim, init=init)
  if family is TaskFamily.PARTIAL:
    return partial_sequences(key, batch_size, length, dim, 3 * dim, init=init)
  return nonlinear_sequences(key, batch_size, length, dim)


def constructed_tokens(
  inputs: jax.Array, layout: TokenLayout | str = TokenLayout.CODE
) -> jax.Array:
  """Tokens of the "constructed" models from s_1..s_T [B, T, N] (s_0 = 0).

  CODE: e_t = [0, s_t, s_t, s_{t−1}] [B, T, 4N]; PAPER: [0, s_t, s_{t−1}] [B, T, 3N]. In both
  the prediction of s_{t+1} is read from the first N dims of the output.
  """
  layout = parse_enum(layout, TokenLayout, "layout")
  prev = jnp.pad(inputs, ((0, 0), (1, 0), (0, 0)))[:, :-1]
  zero = jnp.zeros_like(inputs)
  parts = [zero, inputs, inputs, prev] if layout is TokenLayout.CODE else [zero, inputs, prev]
  return jnp.concatenate(parts, axis=-1)


def one_layer_input_mask(dim: int, layout: TokenLayout | str = TokenLayout.CODE) -> np.ndarray:
  """The 0/1 mask [D] the 1-layer constructed models multiply their input tokens by: the
  code zeroes dims 0..2N−1 (the zero slot and the first copy of s_t), so keys, queries and
  values see only [s_t, s_{t−1}]. The paper layout has no duplicate to hide: all ones.
  A numpy array: it is a static constant of the model, not traced state."""
  layout = parse_enum(layout, TokenLayout, "layout")
  if layout is TokenLayout.CODE:
    return np.concatenate([np.zeros(2 * dim, np.float32), np.ones(2 * dim, np.float32)])
  return np.ones(3 * dim, np.float32)


# -------------------------------------------------------------------------- few-shot regression


class FewShotBatch(NamedTuple):
  """Few-shot regression as one sequence [x_1, y_1, (EOS,) x_2, y_2, ...].

  tokens [B, L, N + 1]: the last channel flags EOS tokens; ``num_prefix`` leading zero tokens
  are slots for learned prefix tokens. targets [B, L, N] hold y_i at the position of x_i (the
  prediction is made there); ``loss_mask`` [L] marks those positions; ``pair_index`` [L]
  gives i (1-based) at x_i positions and 0 elsewhere.
  """

  tokens: jax.Array
  targets: jax.Array
  loss_mask: jax.Array
  pair_index: jax.Array


@functools.partial(
  jax.jit, static_argnames=("batch_size", "num_pairs", "dim", "x_dist", "eos", "num_prefix")
)
def fewshot_sequences(
  key: jax.Array,
  batch_size: int,
  num_pairs: int,
  dim: int = 10,
  *,
  x_dist: FewshotX | str = FewshotX.UNIFORM,
  eos: bool = False,
  num_prefix: int = 0,
) -> FewShotBatch:
  """Few-shot linear regression y = W x + 0.01ε, W orthogonal per sequence (Fig 8).

  Tokens per pair: x_i, y_i and, with ``eos``, an EOS token (channel N set to 1).
  """
  b, n, p = (
    _positive("batch_size", batch_size),
    _positive("dim", dim),
    _positive("num_pairs", num_pairs),
  )
  if num_prefix < 0:
    raise ValueError(f"num_prefix must be >= 0; got {num_prefix}")
  x_dist = parse_enum(x_dist, FewshotX, "x_dist")
  k_w, k_x, k_noise = jax.random.split(key, 3)
  w = orthogonal_matrices(k_w, b, n)
  if x_dist is FewshotX.UNIFORM:
    x = jax.random.uniform(k_x, (b, p, n), jnp.float32, -1.0, 1.0)
  else:
    x = jax.random.normal(k_x, (b, p, n), jnp.float32)
  y = jnp.einsum("bij,bpj->bpi", w, x) + NOISE_STD * jax.random.normal(k_noise, (b, p, n))
  flag = jnp.zeros((b, p, 1))
  per_pair = [jnp.concatenate([x, flag], -1), jnp.concatenate([y, flag], -1)]
  if eos:
    per_pair.append(jnp.concatenate([jnp.zeros_like(x), jnp.ones_like(flag)], -1))
  width = len(per_pair)
  tokens = jnp.stack(per_pair, axis=2).reshape(b, p * width, n + 1)
  targets = jnp.zeros((b, p, width, n)).at[:, :, 0].set(y).reshape(b, p * width, n)
  is_x = jnp.zeros((p, width), bool).at[:, 0].set(True).reshape(-1)
  index = jnp.where(is_x, jnp.repeat(jnp.arange(1, p + 1), width), 0)
  if num_prefix:
    tokens = jnp.pad(tokens, ((0, 0), (num_prefix, 0), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (num_prefix, 0), (0, 0)))
    is_x = jnp.pad(is_x, (num_prefix, 0))
    index = jnp.pad(index, (num_prefix, 0))
  return FewShotBatch(tokens, targets, is_x.astype(jnp.float32), index)


def per_step_loss(predictions: jax.Array, targets: jax.Array) -> jax.Array:
  """½‖ŝ_{t+1} − s_{t+1}‖² summed over dims, mean over the batch: [B, T, N] x2 -> [T]."""
  return 0.5 * jnp.sum((predictions - targets) ** 2, axis=-1).mean(0)


def sequence_loss(predictions: jax.Array, targets: jax.Array) -> jax.Array:
  """The training loss: ½ squared error summed over dims, mean over batch and t."""
  return per_step_loss(predictions, targets).mean()
