"""Meta-learning by least control (ours: sheet §4's instance; the paper's own meta-learning
set-up is unknown without the PDF, and its code does not contain it): an initialisation θ of
fast weights φ is meta-learned so that, per task, the equilibrium of a proximally regularised
inner problem does well on held-out data. Two inner problems share every function below:
  * `INRSpec`: an implicit neural representation (INR) of a text image, fitted to half of its
    pixels (support) and scored on the other half (query PSNR);
  * `FewShotSpec`: a glyph classifier, fitted to one drawing of each of `ways` new classes
    (support) and scored on other drawings of them (query accuracy): the stand-in for
    Omniglot 20-way 1-shot (procedural glyphs, `innerloop_tasks.glyphs`).

Shape notation: B tasks, N fast weights, K support and Q query items of a task, P = outputs the
readout gives per task (INR: Q intensities; few-shot: Q·ways logits).

Per task, φ settles at the equilibrium of the inner flow
    φ̇ = −∇L_in(φ) − λ(φ − θ)
written as the Picard map f(φ; θ) = φ + η(−∇L_in(φ) − λ(φ − θ)) (η the inner rate), so
∂θ f = ηλ·I. The meta-loss L is the problem's outer loss of the readout dec(φ) (the
predictions on the query items; no parameters). Meta-gradients:
  * implicit (iMAML-style recurrent backprop, core.fixed_point):
        ∇θ L = λ(∇²L_in + λI)⁻¹ ∇φ L (per task, summed);
  * LCP-DI: the controlled dynamics of `methods.di_step` on (f, dec) reach (φ*, e*), and
        Δθ = (∂θ f)ᵀ e* = ηλ Σ_b e*_b  → −(k_i/α)·∇θ L in the weak-control limit (tested).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from innerloop_core.fixed_point import Solution, SolverConfig, fixed_point, solve
from innerloop_least_control import methods as M

PyTree = Any


class InnerProblem(Protocol):
  """What the meta-learning functions need of a problem (a hashable, frozen dataclass: it
  parametrises jitted maps). `support` / `query` are one task's data (pytrees); the batched
  functions below vmap over a leading B axis."""

  prox: float  # λ
  inner_rate: float  # η

  @property
  def num_weights(self) -> int: ...

  def init_theta(self, key: jax.Array) -> jax.Array: ...  # (N,)

  def inner_loss(self, phi: jax.Array, support: PyTree) -> jax.Array: ...  # scalar

  def predict(self, phi: jax.Array, query: PyTree) -> jax.Array: ...  # (P,)

  def outer_loss(self, y: jax.Array, query: PyTree) -> jax.Array: ...  # y (B, P) -> scalar

  def score(self, y: jax.Array, query: PyTree) -> jax.Array: ...  # mean over tasks


def init_two_layer(key: jax.Array, d_in: int, hidden: int, d_out: int) -> jax.Array:
  """Flat weights (N,) of `two_layer` like torch.nn.Linear: U(±1/√fan_in) for each layer's
  weights and biases; N = hidden·d_in + hidden + d_out·hidden + d_out."""
  k1, k2 = jax.random.split(key)
  first = jax.random.uniform(k1, (hidden * d_in + hidden,), jnp.float32, -1.0, 1.0)
  second = jax.random.uniform(k2, (d_out * hidden + d_out,), jnp.float32, -1.0, 1.0)
  return jnp.concatenate([first / math.sqrt(d_in), second / math.sqrt(hidden)])


def two_layer(phi: jax.Array, inputs: jax.Array, hidden: int, d_out: int) -> jax.Array:
  """W₂ tanh(W₁x + b₁) + b₂ with the weights read from flat φ (N,): inputs (P, d_in) ->
  (P, d_out). Layout: W₁ (hidden, d_in) row-major, b₁, W₂ (d_out, hidden), b₂."""
  d_in = inputs.shape[-1]
  n1 = hidden * d_in
  w1, b1 = phi[:n1].reshape(hidden, d_in), phi[n1 : n1 + hidden]
  w2 = phi[n1 + hidden : n1 + hidden + d_out * hidden].reshape(d_out, hidden)
  b2 = phi[n1 + hidden + d_out * hidden :]
  return jnp.tanh(inputs @ w1.T + b1) @ w2.T + b2


@dataclasses.dataclass(frozen=True)
class INRSpec:
  """The INR inner problem: g_φ(c) = w₂ᵀ tanh(W₁ γ(c) + b₁) + b₂, γ(c) = [sin 2πΓc, cos 2πΓc]
  with a fixed random Γ (F × 2), maps a pixel coordinate c ∈ [−1, 1]² to an intensity.
  Support: the intensities t of the support pixels (K,) of one image; query: those of the
  query pixels (Q,) (a checkerboard split). L_in(φ) = ½ Σ_k (g_φ(c_k) − t_k)²; outer loss
  (1/B) Σ_b (1/Q) Σ_q ½(g_φ(c_q) − t_q)²; score: query PSNR 10 log₁₀(1/MSE), mean of tasks."""

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

  def init_theta(self, key: jax.Array) -> jax.Array:
    return init_two_layer(key, 2 * self.frequencies, self.hidden, 1)

  def inr(self, phi: jax.Array, coords: jax.Array) -> jax.Array:
    """g_φ: fast weights (N,), coordinates (P, 2) -> intensities (P,)."""
    gamma = jax.random.normal(jax.random.key(self.frequency_seed), (self.frequencies, 2))
    z = 2.0 * math.pi * coords @ (self.frequency_scale * gamma).T
    return two_layer(phi, jnp.concatenate([jnp.sin(z), jnp.cos(z)], axis=1), self.hidden, 1)[:, 0]

  def inner_loss(self, phi: jax.Array, support: jax.Array) -> jax.Array:
    coords, _ = coordinates(self.side)
    return 0.5 * jnp.sum((self.inr(phi, coords) - support) ** 2)

  def predict(self, phi: jax.Array, query: jax.Array) -> jax.Array:
    """Intensities at the query coordinates (Q,) (the targets in `query` are not read)."""
    _, coords = coordinates(self.side)
    return self.inr(phi, coords)

  def outer_loss(self, y: jax.Array, query: jax.Array) -> jax.Array:
    return 0.5 * jnp.mean((y - query) ** 2)

  def score(self, y: jax.Array, query: jax.Array) -> jax.Array:
    return jnp.mean(-10.0 * jnp.log10(jnp.mean((y - query) ** 2, axis=1)))


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


@dataclasses.dataclass(frozen=True)
class FewShotSpec:
  """The few-shot inner problem: a tanh MLP g_φ(x) = W₂ tanh(W₁x + b₁) + b₂ from a glyph's
  S·S pixels to `ways` logits. Support: one drawing of each class, (x (ways, S·S), labels
  (ways,)); query: other drawings, (x (Q, S·S), labels (Q,)). L_in(φ) = Σ_k CE(g_φ(x_k), l_k)
  (summed, like the INR's); outer loss: cross-entropy averaged over tasks and queries; score:
  query accuracy, mean of tasks. Labels are the order in which a task's classes were drawn,
  so θ cannot learn a class's label: only how to learn one from a single drawing."""

  ways: int = 20
  side: int = 16
  hidden: int = 64
  # λ above the most negative curvature of L_in at initialisation (≈ −6; the largest ≈ 8),
  # so the inner problem is locally convex; η well below 2/(max curvature + λ) because
  # meta-learning grows the curvature (at η = 0.05 the inner map stopped contracting after
  # ~200 meta-steps; probe on this machine).
  prox: float = 10.0
  inner_rate: float = 0.02

  @property
  def num_weights(self) -> int:
    d = self.side * self.side
    return self.hidden * d + self.hidden + self.ways * self.hidden + self.ways

  def init_theta(self, key: jax.Array) -> jax.Array:
    return init_two_layer(key, self.side * self.side, self.hidden, self.ways)

  def logits(self, phi: jax.Array, x: jax.Array) -> jax.Array:
    """x (P, S·S) -> logits (P, ways)."""
    return two_layer(phi, x, self.hidden, self.ways)

  def inner_loss(self, phi: jax.Array, support: tuple[jax.Array, jax.Array]) -> jax.Array:
    x, labels = support
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(self.logits(phi, x), labels))

  def predict(self, phi: jax.Array, query: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Query logits, flattened (Q·ways,): the readout y the controller acts on."""
    return self.logits(phi, query[0]).reshape(-1)

  def outer_loss(self, y: jax.Array, query: tuple[jax.Array, jax.Array]) -> jax.Array:
    labels = query[1]
    return jnp.mean(
      optax.softmax_cross_entropy_with_integer_labels(y.reshape(*labels.shape, self.ways), labels)
    )

  def score(self, y: jax.Array, query: tuple[jax.Array, jax.Array]) -> jax.Array:
    labels = query[1]
    return jnp.mean(jnp.argmax(y.reshape(*labels.shape, self.ways), axis=-1) == labels)


def inner_map(problem: InnerProblem, params: tuple[jax.Array, PyTree], phi: jax.Array) -> jax.Array:
  """f(φ; θ) = φ − η(∇L_in(φ) + λ(φ − θ)): params (θ (N,), support (B, ...)), φ (B, N)."""
  theta, support = params
  grads = jax.vmap(jax.grad(problem.inner_loss))(phi, support)
  return phi - problem.inner_rate * (grads + problem.prox * (phi - theta[None]))


def readout(problem: InnerProblem, query: PyTree, phi: jax.Array) -> jax.Array:
  """dec(φ): the predictions on every task's query items, φ (B, N) -> y (B, P)."""
  return jax.vmap(problem.predict)(phi, query)


def at_theta(theta: jax.Array, tasks: int) -> jax.Array:
  """θ (N,) as every task's fast weights (B, N): the inner solves start there."""
  return jnp.broadcast_to(theta, (tasks, theta.shape[0]))


def _tasks(support: PyTree) -> int:
  return jax.tree.leaves(support)[0].shape[0]


def adapt(
  problem: InnerProblem, theta: jax.Array, support: PyTree, solver: SolverConfig
) -> Solution:
  """φ*(θ) (B, N) for a batch of supports, from φ = θ (not differentiable: see `adapted`)."""
  f = functools.partial(inner_map, problem, (theta, support))
  return solve(f, at_theta(theta, _tasks(support)), solver)


def adapted(problem: InnerProblem, theta: jax.Array, support: PyTree, solver: SolverConfig):
  """φ*(θ) (B, N), differentiable in θ by implicit differentiation (core.fixed_point)."""
  f = functools.partial(inner_map, problem)
  return fixed_point(f, (theta, support), at_theta(theta, _tasks(support)), solver).value


def meta_loss(
  problem: InnerProblem, theta: jax.Array, support: PyTree, query: PyTree, solver: SolverConfig
) -> jax.Array:
  """L(θ): the outer loss of the readout at φ*(θ), differentiable implicitly."""
  return problem.outer_loss(
    readout(problem, query, adapted(problem, theta, support, solver)), query
  )


def implicit_gradient(
  problem: InnerProblem, theta: jax.Array, support: PyTree, query: PyTree, solver: SolverConfig
) -> jax.Array:
  """∇θ L through the inner equilibrium (iMAML-style recurrent backprop)."""
  return jax.grad(functools.partial(meta_loss, problem))(theta, support, query, solver)


def lcp_update(
  problem: InnerProblem, theta: jax.Array, support: PyTree, query: PyTree, ctrl: M.ControlConfig
) -> jax.Array:
  """Δθ = (∂θ f)ᵀ e* = ηλ Σ_b e*_b at the DI controlled equilibrium (ascent direction)."""
  f = functools.partial(inner_map, problem, (theta, support))
  dec = functools.partial(readout, problem, query)
  y0 = jax.eval_shape(dec, at_theta(theta, _tasks(support)))
  error = jax.grad(lambda y: problem.outer_loss(y, query))
  s, _ = M.di_equilibrium(f, dec, error, at_theta(theta, _tasks(support)), y0.shape[1], ctrl)
  return problem.inner_rate * problem.prox * jnp.sum(s.e, axis=0)


class MetaInit(nnx.Module):
  """The meta-parameters θ (N,) as an nnx Param (for the shared training loop)."""

  def __init__(self, problem: InnerProblem, key: jax.Array):
    self.theta = nnx.Param(problem.init_theta(key))


def meta_training_loss(
  model: MetaInit,
  support: PyTree,
  query: PyTree,
  problem: InnerProblem,
  method: M.Method,
  ctrl: M.ControlConfig,
  solver: SolverConfig,
) -> jax.Array:
  """A scalar whose value is the outer loss at φ*(θ) and whose θ-gradient is the method's
  meta-gradient: autodiff through the fixed point (RBP) or −Δθ of LCP-DI."""
  theta = model.theta[...]
  if method is M.Method.RBP:
    return meta_loss(problem, theta, support, query, solver)
  if method is not M.Method.LCP_DI:
    raise ValueError(f"meta-learning rows support rbp and lcp-di, got {method.value}")
  fixed = jax.lax.stop_gradient(theta)
  delta = lcp_update(problem, fixed, support, query, ctrl)
  phi = adapt(problem, fixed, support, solver).value
  value = problem.outer_loss(readout(problem, query, phi), query)
  surrogate = -jnp.sum(delta * theta)
  return surrogate - jax.lax.stop_gradient(surrogate) + value
