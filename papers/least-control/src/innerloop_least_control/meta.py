"""Meta-learning by least control: an implicit neural representation (INR) of text images whose
initialisation θ is meta-learned (ours: the instance of sheet §4; the paper's own meta-learning
set-up is unknown without the PDF, and its code does not contain it).

Shape notation: B tasks (images), S image side, K support and Q query pixels (a checkerboard
split of the S·S grid), F Fourier frequencies, H hidden units, N = 2FH + 2H + 1 fast weights.

An INR g_φ maps a pixel coordinate c ∈ [−1, 1]² to an intensity,
    g_φ(c) = w₂ᵀ tanh(W₁ γ(c) + b₁) + b₂,   γ(c) = [sin 2πΓc, cos 2πΓc]
with a fixed random Γ (F × 2). Per task, the fast weights φ fit the support pixels t under a
pull of strength λ toward the meta-parameters θ, the equilibrium of the inner flow
    φ̇ = −∇L_in(φ) − λ(φ − θ),   L_in(φ) = ½ Σ_k (g_φ(c_k) − t_k)²
written as the Picard map f(φ; θ) = φ + η(−∇L_in(φ) − λ(φ − θ)) (η the inner rate), so
∂θ f = ηλ·I. The meta-loss is the query error L = (1/B) Σ_b (1/Q) Σ_q ½(g_φ*(c_q) − t_q)², and
the readout dec(φ) = g_φ(query coordinates) (Q outputs, no parameters). Meta-gradients:
  * implicit (iMAML-style recurrent backprop, core.fixed_point):
        ∇θ L = λ(∇²L_in + λI)⁻¹ ∇φ L (per task, summed);
  * LCP-DI: the controlled dynamics of `methods.di_step` on (f, dec) reach (φ*, e*), and
        Δθ = (∂θ f)ᵀ e* = ηλ Σ_b e*_b  → −(k_i/α)·∇θ L in the weak-control limit (tested).
Reported: query PSNR = 10 log₁₀(1/MSE) on held-out text images, after the inner solve.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from innerloop_core.fixed_point import Solution, SolverConfig, fixed_point, solve
from innerloop_least_control import methods as M


@dataclasses.dataclass(frozen=True)
class INRSpec:
  """The INR and its inner problem (hashable: it parametrises the maps)."""

  side: int = 16
  frequencies: int = 16  # F
  frequency_scale: float = 2.0  # Γ ~ N(0, scale²): frequencies of a few cycles per image
  hidden: int = 32  # H
  # λ: above the most negative curvature of L_in (≈ −29 at initialisation for these sizes), so
  # the inner problem is locally convex and f contracts; adaptation is partial (iMAML-style).
  prox: float = 100.0
  inner_rate: float = 0.003  # η ≈ 1/(max curvature ≈ 210 + λ): f contracts in every direction
  frequency_seed: int = 0

  @property
  def num_weights(self) -> int:
    return 2 * self.frequencies * self.hidden + 2 * self.hidden + 1


def _support_mask(side: int) -> np.ndarray:
  """(S·S,) bool, row-major: the "black" squares of a checkerboard are the support."""
  return ((np.arange(side)[:, None] + np.arange(side)[None, :]) % 2 == 0).ravel()


def coordinates(side: int) -> tuple[np.ndarray, np.ndarray]:
  """(support (K, 2), query (Q, 2)) pixel centres in [−1, 1]²: a checkerboard split."""
  ticks = (np.arange(side) + 0.5) / side * 2.0 - 1.0
  rows, cols = np.meshgrid(ticks, ticks, indexing="ij")
  grid = np.stack([rows.ravel(), cols.ravel()], axis=1).astype(np.float32)
  mask = _support_mask(side)
  return grid[mask], grid[~mask]


def split_pixels(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """images (B, S, S) -> (support (B, K), query (B, Q)) in the order of `coordinates`."""
  mask = _support_mask(images.shape[-1])
  flat = np.asarray(images).reshape(images.shape[0], -1)
  return flat[:, mask], flat[:, ~mask]


def _frequencies(spec: INRSpec) -> jax.Array:
  return spec.frequency_scale * jax.random.normal(
    jax.random.key(spec.frequency_seed), (spec.frequencies, 2)
  )


def inr(spec: INRSpec, phi: jax.Array, coords: jax.Array) -> jax.Array:
  """g_φ: fast weights (N,), coordinates (P, 2) -> intensities (P,)."""
  f2, h = 2 * spec.frequencies, spec.hidden
  w1 = phi[: h * f2].reshape(h, f2)
  b1 = phi[h * f2 : h * f2 + h]
  w2 = phi[h * f2 + h : h * f2 + 2 * h]
  b2 = phi[-1]
  z = 2.0 * math.pi * coords @ _frequencies(spec).T
  gamma = jnp.concatenate([jnp.sin(z), jnp.cos(z)], axis=1)
  return jnp.tanh(gamma @ w1.T + b1) @ w2 + b2


def init_theta(spec: INRSpec, key: jax.Array) -> jax.Array:
  """θ (N,) like torch.nn.Linear: U(±1/√fan_in) for each layer's weights and biases."""
  f2, h = 2 * spec.frequencies, spec.hidden
  k1, k2 = jax.random.split(key)
  first = jax.random.uniform(k1, (h * f2 + h,), jnp.float32, -1.0, 1.0) / math.sqrt(f2)
  second = jax.random.uniform(k2, (h + 1,), jnp.float32, -1.0, 1.0) / math.sqrt(h)
  return jnp.concatenate([first, second])


def inner_loss(spec: INRSpec, phi: jax.Array, support: jax.Array) -> jax.Array:
  """L_in(φ) = ½ Σ_k (g_φ(c_k) − t_k)² for one task: φ (N,), support (K,)."""
  coords, _ = coordinates(spec.side)
  return 0.5 * jnp.sum((inr(spec, phi, coords) - support) ** 2)


def inner_map(spec: INRSpec, params: tuple[jax.Array, jax.Array], phi: jax.Array) -> jax.Array:
  """f(φ; θ) = φ − η(∇L_in(φ) + λ(φ − θ)): params (θ (N,), support (B, K)), φ (B, N)."""
  theta, support = params
  grads = jax.vmap(jax.grad(functools.partial(inner_loss, spec)))(phi, support)
  return phi - spec.inner_rate * (grads + spec.prox * (phi - theta[None]))


def readout(spec: INRSpec, phi: jax.Array) -> jax.Array:
  """dec(φ) = g_φ at the query coordinates: φ (B, N) -> (B, Q)."""
  _, coords = coordinates(spec.side)
  return jax.vmap(lambda p: inr(spec, p, coords))(phi)


def query_loss(y: jax.Array, query: jax.Array) -> jax.Array:
  """L = (1/B) Σ_b (1/Q) Σ_q ½ (y − t)²: y, query (B, Q)."""
  return 0.5 * jnp.mean((y - query) ** 2)


def query_error(y: jax.Array, query: jax.Array) -> jax.Array:
  """∂L/∂y = (y − t)/(B·Q)."""
  return (y - query) / y.size


def psnr(y: jax.Array, query: jax.Array) -> jax.Array:
  """Mean over tasks of 10 log₁₀(1/MSE) (intensities in [0, 1]): y, query (B, Q)."""
  return jnp.mean(-10.0 * jnp.log10(jnp.mean((y - query) ** 2, axis=1)))


def at_theta(theta: jax.Array, tasks: int) -> jax.Array:
  """θ (N,) as every task's fast weights (B, N): the inner solves start there."""
  return jnp.broadcast_to(theta, (tasks, theta.shape[0]))


def adapt(spec: INRSpec, theta: jax.Array, support: jax.Array, solver: SolverConfig) -> Solution:
  """φ*(θ) (B, N) for support (B, K), from φ = θ (not differentiable: see `adapted`)."""
  f = functools.partial(inner_map, spec, (theta, support))
  return solve(f, at_theta(theta, support.shape[0]), solver)


def adapted(spec: INRSpec, theta: jax.Array, support: jax.Array, solver: SolverConfig):
  """φ*(θ) (B, N), differentiable in θ by implicit differentiation (core.fixed_point)."""
  f = functools.partial(inner_map, spec)
  return fixed_point(f, (theta, support), at_theta(theta, support.shape[0]), solver).value


def implicit_gradient(
  spec: INRSpec, theta: jax.Array, support: jax.Array, query: jax.Array, solver: SolverConfig
) -> jax.Array:
  """∇θ L through the inner equilibrium (iMAML-style recurrent backprop)."""
  return jax.grad(lambda t: query_loss(readout(spec, adapted(spec, t, support, solver)), query))(
    theta
  )


def lcp_update(
  spec: INRSpec, theta: jax.Array, support: jax.Array, query: jax.Array, ctrl: M.ControlConfig
) -> jax.Array:
  """Δθ = (∂θ f)ᵀ e* = ηλ Σ_b e*_b at the DI controlled equilibrium (ascent direction)."""
  f = functools.partial(inner_map, spec, (theta, support))
  dec = functools.partial(readout, spec)
  v0 = at_theta(theta, support.shape[0])
  s, _ = M.di_equilibrium(f, dec, lambda y: query_error(y, query), v0, query.shape[1], ctrl)
  return spec.inner_rate * spec.prox * jnp.sum(s.e, axis=0)


class MetaINR(nnx.Module):
  """The meta-parameters θ (N,) as an nnx Param (for the shared training loop)."""

  def __init__(self, spec: INRSpec, key: jax.Array):
    self.theta = nnx.Param(init_theta(spec, key))


def meta_training_loss(
  model: MetaINR,
  support: jax.Array,
  query: jax.Array,
  spec: INRSpec,
  method: M.Method,
  ctrl: M.ControlConfig,
  solver: SolverConfig,
) -> jax.Array:
  """A scalar whose value is the query loss at φ*(θ) and whose θ-gradient is the method's
  meta-gradient: autodiff through the fixed point (RBP) or −Δθ of LCP-DI."""
  theta = model.theta[...]
  if method is M.Method.RBP:
    return query_loss(readout(spec, adapted(spec, theta, support, solver)), query)
  if method is not M.Method.LCP_DI:
    raise ValueError(f"meta-learning rows support rbp and lcp-di, got {method.value}")
  fixed = jax.lax.stop_gradient(theta)
  delta = lcp_update(spec, fixed, support, query, ctrl)
  value = query_loss(readout(spec, adapt(spec, fixed, support, solver).value), query)
  surrogate = -jnp.sum(delta * theta)
  return surrogate - jax.lax.stop_gradient(surrogate) + value
