"""Fixed points x* = f(x*) of batched maps: damped Picard, Anderson, implicit gradients.

Shape notation: B examples solved side by side; the state is a pytree whose every leaf has a
leading B axis (flattened per example to n numbers inside the solvers). Each example has its
own fixed point; the batch stops together.

Stopping rule (one for both solvers, the relative residual of the least-control code):
    residual(x) = max_b ‖f(x)_b − x_b‖ / (eps + ‖x_b‖)
and a solve stops at the first iterate with residual < tol, or after max_iter evaluations of
f. For undamped Picard this is exactly max_b ‖x_{k+1} − x_k‖ / (eps + ‖x_k‖).

Why not optimistix/lineax: optimistix (0.1.0, installs fine with jax 0.10) offers plain
fixed-point iteration and Newton-type root finders but no Anderson acceleration; its Cauchy
test is one norm of the whole state (atol + rtol·‖y‖), not the per-example maximum that the
papers stop on; and its implicit adjoint solves the linear system with lineax rather than by
the adjoint fixed-point iteration that recurrent backprop specifies. The three extra packages
(equinox, lineax, jaxtyping) would buy none of the behaviour needed here.

`fixed_point` differentiates through the solution implicitly (recurrent backprop): the
cotangent w solves the adjoint fixed point w = (∂f/∂x)ᵀ w + ḡ at x*, and the parameters get
(∂f/∂θ)ᵀ w, with O(1) memory in the number of forward iterations. `unrolled` is the explicit
alternative (BPTT through K Picard steps) that the implicit gradient is tested against.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from innerloop_core.config import ConfigError, parse_enum

PyTree = Any


class Solver(enum.Enum):
  PICARD = "picard"  # x <- (1 − damping)·x + damping·f(x)
  ANDERSON = "anderson"  # type-II Anderson acceleration over the last `memory` iterates


@dataclasses.dataclass(frozen=True)
class SolverConfig:
  solver: Solver = Solver.PICARD
  tol: float = 1e-6  # stop when the relative residual falls below this
  max_iter: int = 800  # evaluations of f at most
  eps: float = 1e-5  # keeps the relative residual finite at x = 0
  damping: float = 1.0  # Picard only; 1 = plain iteration
  memory: int = 5  # Anderson only: iterates kept
  regularization: float = 1e-4  # Anderson only: ridge on the Gram matrix (relative, see below)
  mixing: float = 1.0  # Anderson only: weight of f(x_i) vs x_i in the extrapolation
  # Residual per leaf (max over leaves) instead of over the concatenated state: a state
  # whose parts differ in scale by orders of magnitude (a controller's signal next to the
  # activity it controls) must have every part converged, not just the largest.
  per_leaf: bool = False

  def __post_init__(self):
    object.__setattr__(self, "solver", parse_enum(self.solver, Solver, "solver"))
    if self.max_iter < 1:
      raise ConfigError(f"solver.max_iter must be >= 1, got {self.max_iter}")
    if not 0 < self.damping <= 1:
      raise ConfigError(f"solver.damping must be in (0, 1], got {self.damping}")
    if self.memory < 1:
      raise ConfigError(f"solver.memory must be >= 1, got {self.memory}")


class Solution(NamedTuple):
  value: PyTree  # the last iterate, leaves (B, ...)
  iterations: jax.Array  # int32 scalar: evaluations of f made
  residual: jax.Array  # the relative residual at the last check (max over the batch)


def _flatten(tree: PyTree) -> tuple[jax.Array, Callable[[jax.Array], PyTree]]:
  """Leaves (B, ...) -> one (B, n) array, and its inverse."""
  leaves, treedef = jax.tree.flatten(tree)
  batch = leaves[0].shape[0]
  shapes = [leaf.shape for leaf in leaves]
  sizes = [int(jnp.size(leaf)) // batch for leaf in leaves]
  flat = jnp.concatenate([leaf.reshape(batch, -1) for leaf in leaves], axis=1)

  def unflatten(x: jax.Array) -> PyTree:
    parts, start = [], 0
    for shape, size in zip(shapes, sizes):
      parts.append(x[:, start : start + size].reshape(shape))
      start += size
    return jax.tree.unflatten(treedef, parts)

  return flat, unflatten


def relative_residual(new: jax.Array, old: jax.Array, eps: float) -> jax.Array:
  """max_b ‖new_b − old_b‖ / (eps + ‖old_b‖) for (B, n) arrays."""
  num = jnp.linalg.norm(new - old, axis=-1)
  return jnp.max(num / (eps + jnp.linalg.norm(old, axis=-1)))


Residual = Callable[[jax.Array, jax.Array], jax.Array]


def _residual_fn(sizes: list[int], cfg: SolverConfig) -> Residual:
  """The stop metric on flat (B, n) states: over the whole state or max over leaves."""
  if not cfg.per_leaf or len(sizes) == 1:
    return lambda new, old: relative_residual(new, old, cfg.eps)
  bounds = [0]
  for size in sizes:
    bounds.append(bounds[-1] + size)

  def per_leaf(new, old):
    parts = [
      relative_residual(new[:, a:b], old[:, a:b], cfg.eps) for a, b in zip(bounds, bounds[1:])
    ]
    return jnp.max(jnp.stack(parts))

  return per_leaf


def _picard(g: Callable, x0: jax.Array, cfg: SolverConfig, residual: Residual) -> Solution:
  def cond(state):
    k, _, res = state
    return (k < cfg.max_iter) & (res >= cfg.tol)

  def body(state):
    k, x, _ = state
    gx = g(x)
    res = residual(gx, x)
    return k + 1, x + cfg.damping * (gx - x), res

  k, x, res = jax.lax.while_loop(
    cond, body, (jnp.zeros((), jnp.int32), x0, jnp.full((), jnp.inf, x0.dtype))
  )
  return Solution(x, k, res)


def _anderson_weights(resid: jax.Array, valid: jax.Array, reg: float) -> jax.Array:
  """Weights α (B, m) minimising ‖Σ α_i r_i‖² + λ‖α‖² subject to Σ α_i = 1 over the valid
  slots. resid: (B, m, n) residuals f(x_i) − x_i; valid: (m,) which slots hold iterates.

  The ridge is λ times the mean squared residual norm: scale-free, so float32 runs keep
  extrapolating near convergence instead of the ridge swamping a Gram matrix of 1e-12."""
  gram = jnp.einsum("bin,bjn->bij", resid, resid)
  mask = valid[:, None] & valid[None, :]
  gram = jnp.where(mask, gram, 0.0)
  diag = jnp.diagonal(gram, axis1=1, axis2=2)
  scale = jnp.sum(diag, axis=1) / jnp.maximum(jnp.sum(valid), 1)
  eye = jnp.eye(valid.shape[0], dtype=resid.dtype)
  ridge = (reg * scale + jnp.finfo(resid.dtype).tiny)[:, None, None] * eye
  gram = gram + jnp.where(valid, 1.0, 0.0) * ridge + jnp.diag(jnp.where(valid, 0.0, 1.0))
  rhs = jnp.broadcast_to(jnp.where(valid, 1.0, 0.0).astype(resid.dtype), diag.shape)
  z = jnp.linalg.solve(gram, rhs[..., None])[..., 0]
  return z / jnp.sum(z, axis=1, keepdims=True)


def _anderson(g: Callable, x0: jax.Array, cfg: SolverConfig, residual: Residual) -> Solution:
  batch, n = x0.shape
  m = cfg.memory
  xs = jnp.zeros((batch, m, n), x0.dtype)
  gs = jnp.zeros((batch, m, n), x0.dtype)

  def cond(state):
    k, *_, res = state
    return (k < cfg.max_iter) & (res >= cfg.tol)

  def body(state):
    k, x, xs, gs, _ = state
    gx = g(x)
    res = residual(gx, x)
    slot = k % m
    xs = xs.at[:, slot].set(x)
    gs = gs.at[:, slot].set(gx)
    valid = jnp.arange(m) <= k
    alpha = _anderson_weights(gs - xs, valid, cfg.regularization)
    mixed = cfg.mixing * gs + (1.0 - cfg.mixing) * xs
    x_next = jnp.einsum("bi,bin->bn", alpha, mixed)
    # Once converged, return f(x) (as Picard would) rather than the extrapolation.
    x_next = jnp.where(res < cfg.tol, gx, x_next)
    return k + 1, x_next, xs, gs, res

  k, x, *_, res = jax.lax.while_loop(
    cond, body, (jnp.zeros((), jnp.int32), x0, xs, gs, jnp.full((), jnp.inf, x0.dtype))
  )
  return Solution(x, k, res)


def solve(f: Callable[[PyTree], PyTree], x0: PyTree, cfg: SolverConfig) -> Solution:
  """Iterates x <- f(x) from x0 (leaves (B, ...)) until the relative residual < cfg.tol.

  Not differentiable by design (a while loop); use `fixed_point` for gradients."""
  flat0, unflatten = _flatten(x0)
  batch = flat0.shape[0]
  residual = _residual_fn([int(jnp.size(leaf)) // batch for leaf in jax.tree.leaves(x0)], cfg)

  def g(x):
    return _flatten(f(unflatten(x)))[0]

  if cfg.solver is Solver.PICARD:
    sol = _picard(g, flat0, cfg, residual)
  else:
    sol = _anderson(g, flat0, cfg, residual)
  return Solution(unflatten(sol.value), sol.iterations, sol.residual)


def unrolled(f: Callable[[PyTree], PyTree], x0: PyTree, num_steps: int, damping: float = 1.0):
  """x_K after exactly K = num_steps damped Picard steps, differentiable by autodiff (BPTT
  through the solver: memory grows with K)."""

  def step(x, _):
    fx = f(x)
    return jax.tree.map(lambda a, b: a + damping * (b - a), x, fx), None

  return jax.lax.scan(step, x0, None, length=num_steps)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3, 4))
def _implicit(f, params, x0, cfg, backward_cfg):
  return solve(lambda x: f(params, x), x0, cfg)


def _implicit_fwd(f, params, x0, cfg, backward_cfg):
  sol = solve(lambda x: f(params, x), x0, cfg)
  return sol, (params, sol.value, x0)


def _implicit_bwd(f, cfg, backward_cfg, res, cotangent):
  params, x_star, x0 = res
  g_value = cotangent.value
  _, vjp_x = jax.vjp(lambda x: f(params, x), x_star)
  # The adjoint fixed point w = (∂f/∂x)ᵀ w + ḡ, solved with the same machinery.
  adjoint = solve(lambda w: jax.tree.map(jnp.add, vjp_x(w)[0], g_value), g_value, backward_cfg)
  _, vjp_p = jax.vjp(lambda p: f(p, x_star), params)
  (g_params,) = vjp_p(adjoint.value)
  return g_params, jax.tree.map(jnp.zeros_like, x0)


_implicit.defvjp(_implicit_fwd, _implicit_bwd)


def fixed_point(
  f: Callable[[PyTree, PyTree], PyTree],
  params: PyTree,
  x0: PyTree,
  cfg: SolverConfig,
  backward_cfg: SolverConfig | None = None,
) -> Solution:
  """Solves x* = f(params, x*) from x0; gradients w.r.t. params by implicit differentiation.

  f must be a hashable callable (a module-level function or a functools.partial of one with
  hashable arguments). The gradient w.r.t. x0 is zero: the fixed point does not depend on
  where the solver started. `backward_cfg` (default: cfg) solves the adjoint system."""
  return _implicit(f, params, x0, cfg, backward_cfg or cfg)
