"""Reference solvers of next-state prediction, fitted in the workspace (sheet §4).

Shape notation: B sequences, T steps, N state width, K preconditioning steps.
Every solver reads inputs x = s_1..s_T [B, T, N] and targets y = s_2..s_{T+1} [B, T, N]
and predicts ŷ_t = ŝ_{t+1} from the pairs (s_j, s_{j+1}), j < t, and the query s_t. At t = 1
there is no pair and every solver predicts 0.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from innerloop_tasks.dynamics import sequence_loss


def strict_prefix_sum(a: jax.Array) -> jax.Array:
  """Σ_{j<t} a_j along axis 1 (zero at t = 1)."""
  return jnp.cumsum(a, axis=1) - a


def transition_sums(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Σ_{j<t} y_j x_jᵀ and Σ_{j<t} x_j x_jᵀ, both [B, T, N, N]."""
  cross = strict_prefix_sum(jnp.einsum("bti,btj->btij", y, x))
  gram = strict_prefix_sum(jnp.einsum("bti,btj->btij", x, x))
  return cross, gram


def gd1_direction(x: jax.Array, y: jax.Array) -> jax.Array:
  """−∇L_t(0) s_t = Σ_{j<t} y_j (x_j·x_t) [B, T, N]; GD-1 predicts η times this."""
  t = x.shape[1]
  scores = jnp.einsum("btn,bsn->bts", x, x) * jnp.tri(t, k=-1)
  return jnp.einsum("bts,bsn->btn", scores, y)


def line_search_eta(x: jax.Array, y: jax.Array) -> jax.Array:
  """The η minimising the t-averaged loss of GD-1 on this batch. The loss is quadratic in η,
  so the line search is exact: η* = ⟨g, y⟩ / ⟨g, g⟩ with g the GD-1 direction."""
  g = gd1_direction(x, y)
  return jnp.sum(g * y) / jnp.sum(g * g)


def gd1_predict(x: jax.Array, y: jax.Array, eta: float | jax.Array) -> jax.Array:
  """ŷ_t = (0 + η Σ_{j<t} (y_j − 0·x_j) x_jᵀ) x_t [B, T, N] (one GD step on L_t from Φ_0 = 0)."""
  return eta * gd1_direction(x, y)


def ridge_lsq_predict(x: jax.Array, y: jax.Array, rho: float) -> jax.Array:
  """ŷ_t = (Σ_{j<t} y_j x_jᵀ)(Σ_{j<t} x_j x_jᵀ + ρI)⁻¹ x_t [B, T, N]."""
  cross, gram = transition_sums(x, y)
  eye = jnp.eye(x.shape[-1], dtype=x.dtype)
  z = jnp.linalg.solve(gram + rho * eye, x[..., None])[..., 0]
  return jnp.einsum("btij,btj->bti", cross, z)


class Chebyshev(NamedTuple):
  """Step sizes α_k and momenta β_k of K preconditioning steps (sheet §4, Prop 2)."""

  alpha: jax.Array  # [K]
  beta: jax.Array  # [K]

  @classmethod
  def neumann(cls, num_steps: int) -> Chebyshev:
    """α = 1, β = 0: the truncated Neumann series, the start of the fit."""
    return cls(jnp.ones((num_steps,)), jnp.zeros((num_steps,)))


def chebyshev_apply(gram: jax.Array, rho: float, v: jax.Array, coeffs: Chebyshev) -> jax.Array:
  """M_K v / c ≈ (G + ρI)⁻¹ v by the code's recursion on Â = (G + ρI)/c, c = ‖G + ρI‖_F:

  T_0 = M_0 = M_{−1} = I;  T_k = T_{k−1}(I − α_k Â);  M_k = M_{k−1} + T_k + β_k(M_{k−1} − M_{k−2}).

  All M_k, T_k are polynomials in Â, so they are applied to v as vectors.
  gram [..., N, N], v [..., N] -> [..., N].
  """
  a = gram + rho * jnp.eye(gram.shape[-1], dtype=gram.dtype)
  c = jnp.linalg.norm(a, axis=(-2, -1))
  a_hat = a / c[..., None, None]

  def step(carry, ab):
    tau, m, m_prev = carry
    alpha, beta = ab
    tau = tau - alpha * jnp.einsum("...ij,...j->...i", a_hat, tau)
    m_new = m + tau + beta * (m - m_prev)
    return (tau, m_new, m), None

  (_, m, _), _ = jax.lax.scan(step, (v, v, v), (coeffs.alpha, coeffs.beta))
  return m / c[..., None]


def prop2_predict(x: jax.Array, y: jax.Array, rho: float, coeffs: Chebyshev) -> jax.Array:
  """Prop-2(K + 1): K preconditioning steps, then one GD step from 0 with η = 1:
  ŷ_t = (Σ_{j<t} y_j x_jᵀ) (M_K/c) x_t [B, T, N]."""
  cross, gram = transition_sums(x, y)
  return jnp.einsum("btij,btj->bti", cross, chebyshev_apply(gram, rho, x, coeffs))


def fit_chebyshev(
  sample, num_steps: int, rho: float, *, steps: int, learning_rate: float, key: jax.Array
) -> tuple[Chebyshev, list[float]]:
  """Fits (α, β) of Prop-2(K + 1) by Adam from the Neumann start (1, 0) on fresh batches
  ``sample(key) -> (x, y)``; returns the coefficients and the loss every step."""

  def loss(coeffs, k):
    x, y = sample(k)
    return sequence_loss(prop2_predict(x, y, rho, coeffs), y)

  opt = optax.adam(learning_rate)
  coeffs = Chebyshev.neumann(num_steps)
  state = opt.init(coeffs)

  @jax.jit
  def update(coeffs, state, k):
    value, grads = jax.value_and_grad(loss)(coeffs, k)
    updates, state = opt.update(grads, state, coeffs)
    return optax.apply_updates(coeffs, updates), state, value

  history = []
  for i in range(steps):
    coeffs, state, value = update(coeffs, state, jax.random.fold_in(key, i))
    history.append(float(value))
  return coeffs, history


def kernel_regression_predict(x: jax.Array, y: jax.Array, beta: float | jax.Array) -> jax.Array:
  """Softmax kernel regression ŷ_t = Σ_{j<t} y_j softmax_j(β x_j·x_t) [B, T, N]; 0 at t = 1."""
  t = x.shape[1]
  allowed = jnp.tri(t, k=-1, dtype=bool)
  logits = jnp.where(allowed, beta * jnp.einsum("btn,bsn->bts", x, x), -jnp.inf)
  weights = jnp.where(allowed, jax.nn.softmax(jnp.where(allowed, logits, -1e30), axis=-1), 0.0)
  return jnp.einsum("bts,bsn->btn", weights, y)


def line_search_beta(x: jax.Array, y: jax.Array, betas: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The β of a grid with the lowest t-averaged kernel-regression loss, and that loss."""
  losses = jax.lax.map(lambda b: sequence_loss(kernel_regression_predict(x, y, b), y), betas)
  best = jnp.argmin(losses)
  return betas[best], losses[best]
