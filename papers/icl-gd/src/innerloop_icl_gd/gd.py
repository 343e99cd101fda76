"""Gradient-descent references, the Prop-1 / GD++ constructions and the weight analyses.

Shape notation (used in every docstring below):
    B  tasks          N  context pairs per task     K  GD steps (= layers)
    Dx input width    Dy output width               D = Dx + Dy token width
    H  heads

Tokens are the "constructed" ones, e_i = (x_i, y_i) for i <= N and the query (x_q, 0)
last, so T = N + 1. After the last layer the prediction is read off the query token as
ŷ = −(its last Dy entries) (sheet §3.2; the sign matters and fails silently).

The regression loss is L(W) = 1/(2N) Σ_i ‖W x_i − y_i‖², and one GD step from W_0 is
ΔW = −η ∇L(W_0) = −(η/N) Σ_i (W_0 x_i − y_i) x_iᵀ.

Attention weights are in the (in, out) layout of ``innerloop_core.attention``:
w_q, w_k [H, D, K], w_v [H, D, V], w_p [H, V, D]; the constructions use K = V = D.
Reference computations use full float32 matmul precision so they stay exact on GPUs,
whose default float32 matmuls may run in TF32.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from innerloop_core.attention import SelfAttention
from innerloop_tasks.regression import RegressionBatch

_F32 = jnp.float32
_HIGHEST = jax.lax.Precision.HIGHEST

# The authors' η grid: 0.001, 0.101, ..., 24.901 (250 points; sheet §4).
DEFAULT_ETA_GRID = (0.001 + 0.1 * np.arange(250)).astype(np.float32)


def _einsum(spec: str, *operands) -> jax.Array:
  return jnp.einsum(spec, *operands, precision=_HIGHEST)


# ----------------------------------------------------------------------------------
# Readout and loss
# ----------------------------------------------------------------------------------


def readout(tokens_out: jax.Array, output_dim: int) -> jax.Array:
  """ŷ = −(the query token's y-slot). tokens_out: [B, T, D] -> [B, Dy]."""
  if tokens_out.ndim != 3:
    raise ValueError(f"tokens_out must be [B, T, D]; got shape {tokens_out.shape}")
  if not 1 <= output_dim < tokens_out.shape[-1]:
    raise ValueError(f"output_dim must be in [1, D={tokens_out.shape[-1]}); got {output_dim}")
  return -tokens_out[:, -1, -output_dim:]


def query_loss(y_hat: jax.Array, y: jax.Array) -> jax.Array:
  """½‖ŷ − y‖² averaged over tasks (the plotted loss, with the ½). [B, Dy] x2 -> scalar."""
  if y_hat.shape != y.shape:
    raise ValueError(f"y_hat and y must have the same shape; got {y_hat.shape} and {y.shape}")
  return 0.5 * jnp.mean(jnp.sum((y_hat - y) ** 2, axis=-1))


# ----------------------------------------------------------------------------------
# GD-K / GD++-K reference
# ----------------------------------------------------------------------------------


def _check_steps(name: str, values, num_steps: int | None = None) -> jax.Array:
  values = jnp.asarray(values, _F32)
  if values.ndim != 1 or values.shape[0] < 1:
    raise ValueError(
      f"{name} must be a 1-D array with one entry per step; got shape {values.shape}"
    )
  if num_steps is not None and values.shape[0] != num_steps:
    raise ValueError(f"{name} must have {num_steps} entries (one per step); got {values.shape[0]}")
  return values


def gd_predict(batch: RegressionBatch, etas, gammas=None) -> jax.Array:
  """K steps of GD (or GD++) from W_0 = 0 on each task's context, applied to its query.

  Residual recursion of sheet §4, which is what a stack of Prop-1 (GD++) layers computes:
      r_i ← y_i, q ← 0
      per step k:  G = Σ_m r_m x_mᵀ;  r_i ← r_i − (η_k/N) G x_i;  q ← q − (η_k/N) G x_q
                   GD++ only: x ← (I − γ_k XXᵀ) x for every x (query included),
                   with XXᵀ = Σ_{i<=N} x_i x_iᵀ (no 1/N), after the y update
      ŷ = −q
  Differentiable in ``etas``, ``gammas`` and the batch (e.g. ``x_query``).

  Args:
    batch: x_context [B, N, Dx], y_context [B, N, Dy], x_query [B, Dx].
    etas: [K] step sizes η_k (a shared η is ``jnp.full(K, η)``).
    gammas: [K] GD++ curvature corrections γ_k, or None for plain GD.
  Returns:
    ŷ [B, Dy].
  """
  etas = _check_steps("etas", etas)
  plus_plus = gammas is not None
  gammas = _check_steps("gammas", gammas, etas.shape[0]) if plus_plus else jnp.zeros_like(etas)
  x, xq = batch.x_context, batch.x_query
  n = x.shape[1]

  def step(carry, eta_gamma):
    x, xq, r, q = carry
    eta, gamma = eta_gamma
    g = _einsum("bni,bnj->bij", r, x)  # G = Σ_m r_m x_mᵀ: [B, Dy, Dx]
    r = r - (eta / n) * _einsum("bij,bnj->bni", g, x)
    q = q - (eta / n) * _einsum("bij,bj->bi", g, xq)
    if plus_plus:
      xxt = _einsum("bni,bnj->bij", x, x)
      x, xq = (
        x - gamma * _einsum("bij,bnj->bni", xxt, x),
        xq - gamma * _einsum("bij,bj->bi", xxt, xq),
      )
    return (x, xq, r, q), None

  q0 = jnp.zeros(batch.y_context.shape[:1] + batch.y_context.shape[2:], _F32)
  (_, _, _, q), _ = jax.lax.scan(step, (x, xq, batch.y_context, q0), (etas, gammas))
  return -q


# ----------------------------------------------------------------------------------
# Constructions (one head, K = V = D)
# ----------------------------------------------------------------------------------


def _construction(
  input_dim, output_dim, w0, x_value_scale, p_diag_x, p_diag_y
) -> dict[str, jax.Array]:
  dx, dy = input_dim, output_dim
  d = dx + dy
  w0 = jnp.zeros((dy, dx), _F32) if w0 is None else jnp.asarray(w0, _F32)
  if w0.shape != (dy, dx):
    raise ValueError(f"w0 must have shape [Dy, Dx] = ({dy}, {dx}); got {w0.shape}")
  # Constant blocks in numpy: only the entries that depend on (η, γ, W_0) are traced.
  is_x = np.arange(d) < dx
  project_x = np.diag(is_x).astype(np.float32)
  # v_i = e_i W_v = (s·x_i, W_0 x_i − y_i): x-part scaled by s, y-part the W_0 residual.
  w_v = np.diag(np.where(is_x, x_value_scale, -1.0)).astype(np.float32)
  w_v = jnp.asarray(w_v) + jnp.pad(w0.T, ((0, dy), (dx, 0)))
  w_p = jnp.diag(jnp.where(is_x, p_diag_x, p_diag_y).astype(_F32))
  return {
    "w_q": jnp.asarray(project_x)[None],
    "w_k": jnp.asarray(project_x)[None],
    "w_v": w_v[None],
    "w_p": w_p[None],
  }


def prop1_params(
  input_dim: int, output_dim: int, eta, num_context: int, w0=None
) -> dict[str, jax.Array]:
  """Prop 1: one LSA layer (``Mask.CONTEXT_ONLY``) that performs one GD step from W_0.

  W_q = W_k = [[I_x, 0], [0, 0]], W_v maps e_i to (0, W_0 x_i − y_i), P = (η/N) I.
  Every token's y-slot then moves by −ΔW x_j; start the query y-slot at −W_0 x_q so the
  readout is (W_0 + ΔW) x_q (it is 0 in ``constructed_tokens``, exact for W_0 = 0).

  Args:
    input_dim, output_dim: Dx, Dy.
    eta: step size η (may be traced).
    num_context: N (the 1/N of the loss sits in P).
    w0: [Dy, Dx] initial weights, default 0.
  Returns:
    dict(w_q [1, D, D], w_k [1, D, D], w_v [1, D, D], w_p [1, D, D]).
  """
  step = jnp.asarray(eta, _F32) / num_context
  return _construction(input_dim, output_dim, w0, 0.0, step, step)


def gd_plus_plus_params(
  input_dim: int, output_dim: int, eta, gamma, num_context: int, w0=None
) -> dict[str, jax.Array]:
  """GD++ (A.10): Prop 1 plus x_j ← (I − γ XXᵀ) x_j for every token, in one LSA layer.

  W_v maps e_i to (x_i, W_0 x_i − y_i), P = blockdiag(−γ I_x, (η/N) I_y), so the y update
  of this layer uses the pre-update x. XXᵀ = Σ_{i<=N} x_i x_iᵀ carries no 1/N, η does.
  Arguments as ``prop1_params``, plus ``gamma`` (may be traced). Returns the same dict.
  """
  return _construction(
    input_dim, output_dim, w0, 1.0, -jnp.asarray(gamma, _F32), jnp.asarray(eta, _F32) / num_context
  )


# ----------------------------------------------------------------------------------
# Baselines: η line search and (η, γ) fits
# ----------------------------------------------------------------------------------


def _grid_losses(batch: RegressionBatch, grid: jax.Array, num_steps: int) -> jax.Array:
  def loss_at(eta):
    return query_loss(gd_predict(batch, jnp.full((num_steps,), eta)), batch.y_query)

  return jax.vmap(loss_at)(grid)


_grid_losses_jit = jax.jit(_grid_losses, static_argnums=2)


def line_search_eta(
  batch: RegressionBatch, num_steps: int = 1, grid=None
) -> tuple[jax.Array, jax.Array]:
  """Best shared η for GD-K from W_0 = 0 on ``batch``, by exhaustive grid search.

  Args:
    batch: the evaluation tasks (the authors use 10⁴).
    num_steps: K, GD steps with one shared η.
    grid: [G] candidate η values; default ``DEFAULT_ETA_GRID`` (0.001, 0.101, ..., 24.901).
      The authors' code prints η/N; this returns η.
  Returns:
    (η at the lowest loss, that loss), both scalars.
  """
  if not isinstance(num_steps, int) or num_steps < 1:
    raise ValueError(f"num_steps must be a positive int; got {num_steps!r}")
  grid = jnp.asarray(DEFAULT_ETA_GRID if grid is None else grid, _F32)
  if grid.ndim != 1 or grid.shape[0] < 1:
    raise ValueError(f"grid must be a non-empty 1-D array of η values; got shape {grid.shape}")
  losses = _grid_losses_jit(batch, grid, num_steps)
  best = jnp.argmin(losses)
  return grid[best], losses[best]


def _fit(
  key, sample_batch, num_layers, shared, steps, learning_rate, init_eta, init_gamma, clip_norm
):
  if num_layers < 1 or steps < 1:
    raise ValueError(f"num_layers and steps must be >= 1; got {num_layers}, {steps}")
  plus_plus = init_gamma is not None
  size = 1 if shared else num_layers

  def init(value, name):
    value = jnp.asarray(value, _F32)
    if value.shape not in ((), (size,)):
      raise ValueError(f"{name} must be a scalar or have shape ({size},); got {value.shape}")
    return jnp.broadcast_to(value, (size,))

  params = {"eta": init(init_eta, "init_eta")}
  if plus_plus:
    params["gamma"] = init(init_gamma, "init_gamma")
  optimizer = optax.adam(learning_rate)
  if clip_norm is not None:
    optimizer = optax.chain(optax.clip_by_global_norm(clip_norm), optimizer)

  def per_layer(p):
    etas = jnp.broadcast_to(p["eta"], (num_layers,))
    gammas = jnp.broadcast_to(p["gamma"], (num_layers,)) if plus_plus else None
    return etas, gammas

  def loss_fn(p, batch):
    return query_loss(gd_predict(batch, *per_layer(p)), batch.y_query)

  @jax.jit
  def run(params, key):
    k_train, k_eval = jax.random.split(key)

    def step(carry, k):
      p, opt_state = carry
      loss, grads = jax.value_and_grad(loss_fn)(p, sample_batch(k))
      updates, opt_state = optimizer.update(grads, opt_state, p)
      return (optax.apply_updates(p, updates), opt_state), loss

    (params, _), _ = jax.lax.scan(
      step, (params, optimizer.init(params)), jax.random.split(k_train, steps)
    )
    return params, loss_fn(params, sample_batch(k_eval))

  params, final_loss = run(params, key)
  etas, gammas = per_layer(params)
  return etas, gammas, final_loss


def fit_gd_plus_plus(
  key: jax.Array,
  sample_batch: Callable[[jax.Array], RegressionBatch],
  num_layers: int,
  *,
  shared: bool,
  steps: int,
  learning_rate: float,
  init_eta,
  init_gamma,
  clip_norm: float | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Fit GD++-K's (η, γ) with Adam on fresh batches, W_0 = 0 (the authors' baseline).

  Only the 2 (shared) or 2K (per-layer) scalars are trained; the authors' code used
  1000 steps shared / 30000 per layer at batch 512 and initialised γ = η/N².

  Args:
    key: PRNG key; split into one key per step plus one for the final evaluation.
    sample_batch: key -> RegressionBatch (jit-traceable).
    num_layers: K.
    shared: one (η, γ) for all layers (recurrent) or one per layer.
    steps, learning_rate: Adam settings (default b1, b2).
    init_eta, init_gamma: scalars or [K] (per-layer) starting values.
    clip_norm: optional global-norm gradient clipping (per-layer fits can be unstable).
  Returns:
    (etas [K], gammas [K], loss of the fitted GD++ on one fresh batch).
  """
  if init_gamma is None:
    raise ValueError("init_gamma must be a number or [K] array; use fit_gd for plain GD")
  return _fit(
    key, sample_batch, num_layers, shared, steps, learning_rate, init_eta, init_gamma, clip_norm
  )


def fit_gd(
  key: jax.Array,
  sample_batch: Callable[[jax.Array], RegressionBatch],
  num_layers: int,
  *,
  shared: bool,
  steps: int,
  learning_rate: float,
  init_eta,
  clip_norm: float | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Like ``fit_gd_plus_plus`` for plain GD-K (γ = 0): returns (etas [K], final loss)."""
  etas, _, loss = _fit(
    key, sample_batch, num_layers, shared, steps, learning_rate, init_eta, None, clip_norm
  )
  return etas, loss


# ----------------------------------------------------------------------------------
# Weight analyses (interpolation, η and γ of trained weights)
# ----------------------------------------------------------------------------------


def _attention_weights(attn_params: SelfAttention | Mapping[str, Any]) -> tuple[jax.Array, ...]:
  names = ("w_q", "w_k", "w_v", "w_p")
  if isinstance(attn_params, SelfAttention):
    return tuple(getattr(attn_params, n)[...] for n in names)
  if isinstance(attn_params, Mapping) and all(n in attn_params for n in names):
    # Values may be arrays or nnx Variables (from nnx.state); [...] reads both.
    return tuple(jnp.asarray(attn_params[n][...]) for n in names)
  raise ValueError(
    f"attn_params must be a SelfAttention or a mapping with keys {names}; got {type(attn_params)}"
  )


def interaction_products(
  attn_params: SelfAttention | Mapping[str, Any],
) -> tuple[jax.Array, jax.Array]:
  """Per-head products M_KQ = W_q W_kᵀ and M_PV = W_v W_p (in, out layout).

  e_j M_KQ e_iᵀ = q_j·k_i (the authors' ``query @ key.T``) and e_i M_PV = v_i P.

  Args:
    attn_params: a ``SelfAttention`` or a mapping with w_q, w_k [H, D, K], w_v [H, D, V],
      w_p [H, V, D].
  Returns:
    (m_kq [H, D, D], m_pv [H, D, D]).
  """
  w_q, w_k, w_v, w_p = _attention_weights(attn_params)
  return _einsum("hdk,hek->hde", w_q, w_k), _einsum("hdv,hve->hde", w_v, w_p)


def rescale_products(
  m_kq: jax.Array, m_pv: jax.Array, input_dim: int
) -> tuple[jax.Array, jax.Array]:
  """(M_KQ/β, M_PV·β) per head, β = mean of M_KQ's first Dx diagonal entries.

  The layer's output only depends on the product of the two, so this leaves it unchanged
  while putting M_KQ on the construction's scale (β = 1 for Prop 1). A head with β ≈ 0
  (no x-x attention) cannot be rescaled meaningfully. m_kq, m_pv: [H, D, D].
  """
  if m_kq.ndim != 3 or m_pv.shape != m_kq.shape:
    raise ValueError(f"m_kq and m_pv must both be [H, D, D]; got {m_kq.shape} and {m_pv.shape}")
  if not 1 <= input_dim <= m_kq.shape[-1]:
    raise ValueError(f"input_dim must be in [1, D={m_kq.shape[-1]}]; got {input_dim}")
  beta = jnp.mean(jnp.diagonal(m_kq, axis1=-2, axis2=-1)[:, :input_dim], axis=-1)[:, None, None]
  return m_kq / beta, m_pv * beta


def interpolate_products(a, b, weight: float = 0.5) -> tuple[jax.Array, jax.Array]:
  """(1 − weight)·a + weight·b elementwise for two (m_kq, m_pv) pairs; 0.5 = the average."""
  return tuple((1.0 - weight) * ma + weight * mb for ma, mb in zip(a, b, strict=True))


def extract_eta_gamma(
  m_pv: jax.Array, input_dim: int, output_dim: int, num_context: int
) -> tuple[jax.Array, jax.Array]:
  """Read (η, γ) off β-rescaled products, matching ``gd_plus_plus_params``.

  γ = −mean(x-block diagonal of M_PV), η/N = −mean(y-block diagonal of M_PV).
  Heads are summed first: exact when all heads share the same rescaled M_KQ (then the
  layer equals one head with Σ_h M_PV,h), an approximation otherwise.

  Args:
    m_pv: [H, D, D] after ``rescale_products``.
    input_dim, output_dim, num_context: Dx, Dy, N.
  Returns:
    (η, γ) scalars.
  """
  if m_pv.ndim != 3 or m_pv.shape[-1] != input_dim + output_dim:
    raise ValueError(
      f"m_pv must be [H, D, D] with D = Dx + Dy = {input_dim + output_dim}; got {m_pv.shape}"
    )
  diag = jnp.diagonal(m_pv.sum(0))
  gamma = -jnp.mean(diag[:input_dim])
  eta = -jnp.mean(diag[input_dim:]) * num_context
  return eta, gamma


# ----------------------------------------------------------------------------------
# Alignment of two predictors (Fig 2)
# ----------------------------------------------------------------------------------


def _per_task_prediction_and_sensitivity(
  predict, batch: RegressionBatch
) -> tuple[jax.Array, jax.Array]:
  """ŷ [B, Dy] and s = ∂ŷ/∂x_q [B, Dy, Dx], each task run as its own batch of one."""

  def one_task(task: RegressionBatch):
    def predict_one(x_query):
      single = jax.tree_util.tree_map(lambda a: a[None], task._replace(x_query=x_query))
      y_hat = predict(single)[0]
      return y_hat, y_hat

    sensitivity, y_hat = jax.jacrev(predict_one, has_aux=True)(task.x_query)
    return y_hat, sensitivity

  # One compiled program per predictor instead of op-by-op dispatch.
  return jax.jit(jax.vmap(one_task))(batch)


def alignment(
  predict_a: Callable[[RegressionBatch], jax.Array],
  predict_b: Callable[[RegressionBatch], jax.Array],
  batch: RegressionBatch,
) -> dict[str, jax.Array]:
  """How alike two in-context learners are on ``batch`` (Fig 2's three measures).

  For every task: ŷ and s = ∂ŷ/∂x_q (autodiff). For Dy > 1 the Jacobian [Dy, Dx] is
  compared as one flattened vector (Frobenius norm), which reduces to the paper's
  10-vector comparison for Dy = 1.

  Args:
    predict_a, predict_b: RegressionBatch -> ŷ [B, Dy]; tasks must not interact.
    batch: the evaluation tasks.
  Returns:
    dict(pred_diff = mean |ŷ_a − ŷ_b|, sens_diff = mean ‖s_a − s_b‖₂,
         sens_cos = mean cos(s_a, s_b)).
  """
  y_a, s_a = _per_task_prediction_and_sensitivity(predict_a, batch)
  y_b, s_b = _per_task_prediction_and_sensitivity(predict_b, batch)
  s_a, s_b = s_a.reshape(s_a.shape[0], -1), s_b.reshape(s_b.shape[0], -1)
  norms = jnp.linalg.norm(s_a, axis=-1) * jnp.linalg.norm(s_b, axis=-1)
  cos = jnp.sum(s_a * s_b, axis=-1) / jnp.maximum(norms, jnp.finfo(_F32).tiny)
  return {
    "pred_diff": jnp.mean(jnp.abs(y_a - y_b)),
    "sens_diff": jnp.mean(jnp.linalg.norm(s_a - s_b, axis=-1)),
    "sens_cos": jnp.mean(cos),
  }
