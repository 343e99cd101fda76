"""The exact identities of the sheet (§8), each computed as a number on a small network.

Shared by the unit tests (which assert the tolerances) and by the train stage (which writes
them to identities.json for the published-results check). Everything runs in float64 (the
finite-difference test needs it) on a hidden-16 network and a batch of real digits.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from innerloop_core.fixed_point import Solver, SolverConfig, solve, unrolled
from innerloop_least_control import methods as M
from innerloop_least_control.model import (
  Arch,
  ModelConfig,
  decoder,
  forward_params,
  implicit_map,
  init_params,
  mean_cross_entropy,
  unrolled_forward,
  zero_state,
)
from innerloop_tasks import images


@contextlib.contextmanager
def float64() -> Iterator[None]:
  """jax_enable_x64 for the block, restored afterwards (jax 0.10 has no context manager)."""
  before = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", before)


@dataclasses.dataclass(frozen=True)
class Setup:
  hidden: int = 16
  batch: int = 32
  seed: int = 0
  alpha: float = 0.1  # the official (strong-control) leak for the equilibrium identities


TIGHT = SolverConfig(tol=1e-12, max_iter=20000, per_leaf=True)


def _problem(setup: Setup, arch: Arch, **model_kw):
  """float64 params of a fresh network and a batch of digits (inputs, labels)."""
  cfg = ModelConfig(arch=arch, input_dim=64, hidden=setup.hidden, **model_kw)
  p = jax.tree.map(lambda a: a.astype(jnp.float64), init_params(cfg, jax.random.key(setup.seed)))
  ds = images.load_digits()
  idx = np.random.default_rng(setup.seed).choice(len(ds.y_train), setup.batch, replace=False)
  return cfg, p, jnp.asarray(ds.x_train[idx], jnp.float64), jnp.asarray(ds.y_train[idx])


def _rel(a: M.Params, b: M.Params) -> float:
  names = sorted(b)
  fa = jnp.concatenate([a[n].ravel() for n in names])
  fb = jnp.concatenate([b[n].ravel() for n in names])
  return float(jnp.linalg.norm(fa - fb) / jnp.linalg.norm(fb))


def rbp_vs_bptt(setup: Setup = Setup(), steps: int = 200) -> float:
  """Relative difference of the RBP gradient and autodiff through `steps` Picard steps."""
  cfg, p, x, y = _problem(setup, Arch.RNN)
  tight = M.GradConfig(forward=TIGHT, backward=TIGHT)
  rbp = jax.jit(lambda q: M.rbp_gradient(q, x, y, cfg, tight))(p)

  def bptt_loss(q):
    v = unrolled(lambda v: implicit_map(q, x, v, cfg.arch), zero_state(x, cfg), steps)
    return mean_cross_entropy(decoder(q, v), y)

  bptt = jax.jit(jax.grad(bptt_loss))(forward_params(p))
  return _rel(rbp, bptt)


def bp_vs_rbp_ff(setup: Setup = Setup()) -> float:
  """ff: autodiff through the 3-step forward pass vs recurrent backprop (2-step convergence)."""
  cfg, p, x, y = _problem(setup, Arch.FF)
  tight = M.GradConfig(forward=TIGHT, backward=TIGHT)
  rbp = jax.jit(lambda q: M.rbp_gradient(q, x, y, cfg, tight))(p)
  bp = jax.grad(lambda q: mean_cross_entropy(decoder(q, unrolled_forward(q, x, cfg)), y))(
    forward_params(p)
  )
  return _rel(bp, rbp)


def di_equilibrium_residuals(setup: Setup = Setup(), arch: Arch = Arch.RNN) -> dict[str, float]:
  """The four DI equilibrium identities, each as ‖lhs − rhs‖ / ‖rhs‖:
  v* = f(x, v*) + e*;  y* = dec(v*) + u*;  (I − J_f)ᵀe* = J_decᵀu*;  u_i* = −∂L/∂y(y*)/α."""
  cfg, p, x, y = _problem(setup, arch)
  ctrl = M.ControlConfig(alpha=setup.alpha, solver=TIGHT)
  s, sol = M.controlled_equilibrium(p, x, y, cfg, ctrl, M.Method.LCP_DI)
  u = ctrl.k_i * s.u_i
  _, vjp_f = jax.vjp(lambda v: implicit_map(p, x, v, arch), s.v)
  _, vjp_dec = jax.vjp(lambda v: decoder(p, v), s.v)

  def rel(lhs, rhs):
    return float(jnp.linalg.norm(lhs - rhs) / jnp.linalg.norm(rhs))

  return {
    "state": rel(s.v, implicit_map(p, x, s.v, arch) + s.e),
    "output": rel(s.y, decoder(p, s.v) + u),
    "control": rel(s.e - vjp_f(s.e)[0], vjp_dec(u)[0]),
    "integral": rel(s.u_i, -M.output_error(s.y, y) / ctrl.alpha),
    "iterations": int(sol.iterations),
  }


def least_control_theorem(setup: Setup = Setup(), eps: float = 1e-5, directions: int = 3):
  """Finite differences of H(θ) = E(v*(θ), y*(θ); θ) along random directions vs the
  least-control gradient −(∂θ f)ᵀe* − (∂θ dec)ᵀu*; returns the relative error of the
  vector of directional derivatives. H is re-solved (DI dynamics, float64) at every θ."""
  cfg, p, x, y = _problem(setup, Arch.RNN)
  ctrl = M.ControlConfig(alpha=setup.alpha, solver=TIGHT)
  grad_cfg = M.GradConfig()
  fwd = forward_params(p)

  def h_of(q):
    s, _ = M.controlled_equilibrium(q, x, y, cfg, ctrl, M.Method.LCP_DI)
    return M.energy(q, x, y, s.v, s.y, cfg.arch, ctrl.alpha)

  h_jit = jax.jit(h_of)
  update = jax.jit(lambda q: M.lcp_update(q, x, y, cfg, ctrl, grad_cfg, M.Method.LCP_DI))
  grad_h = jax.tree.map(jnp.negative, update(fwd))
  keys = jax.random.split(jax.random.key(setup.seed + 7), directions)
  fd, an = [], []
  for k in keys:
    leaves, treedef = jax.tree.flatten(fwd)
    ks = jax.random.split(k, len(leaves))
    d = jax.tree.unflatten(
      treedef, [jax.random.normal(kk, a.shape, a.dtype) for kk, a in zip(ks, leaves)]
    )
    plus = jax.tree.map(lambda a, b: a + eps * b, fwd, d)
    minus = jax.tree.map(lambda a, b: a - eps * b, fwd, d)
    fd.append(float((h_jit(plus) - h_jit(minus)) / (2 * eps)))
    an.append(float(sum(jnp.sum(grad_h[n] * d[n]) for n in fwd)))
  fd, an = np.asarray(fd), np.asarray(an)
  return float(np.linalg.norm(fd - an) / np.linalg.norm(an))


def weak_control_cosine(setup: Setup = Setup(), k_i: float = 1e-3, alpha: float = 1.0) -> float:
  """cos(LCP-DI update, −∇θ L from RBP) with weak control k_i/α (default 1e-3)."""
  cfg, p, x, y = _problem(setup, Arch.RNN)
  ctrl = M.ControlConfig(alpha=alpha, k_i=k_i, solver=TIGHT)
  tight = M.GradConfig(forward=TIGHT, backward=TIGHT)

  @jax.jit
  def cos(q):
    update = M.lcp_update(q, x, y, cfg, ctrl, tight, M.Method.LCP_DI)
    return M.cosine(update, jax.tree.map(jnp.negative, M.rbp_gradient(q, x, y, cfg, tight)))

  return float(cos(p))


def weak_control_literal(setup: Setup = Setup()) -> dict:
  """α = 1e3, k_i = 1, τ_u = 1 taken literally: the u_i Euler step has factor 1 − α, so the
  dynamics blow up (sheet §10). Reports whether the solve converged within 800 steps and
  the largest |u_i| it reached."""
  cfg, p, x, y = _problem(setup, Arch.RNN)
  ctrl = M.ControlConfig(alpha=1e3, k_i=1.0, solver=SolverConfig(tol=1e-6, max_iter=800))
  s, sol = M.controlled_equilibrium(p, x, y, cfg, ctrl, M.Method.LCP_DI)
  converged = bool(jnp.isfinite(sol.residual) & (sol.residual < 1e-6))
  return {"converged": converged, "max_abs_u_i": float(jnp.max(jnp.abs(s.u_i)))}


def picard_vs_anderson(setup: Setup = Setup()) -> dict[str, float]:
  """Max |v°_Picard − v°_Anderson| on the rnn, iterations of each, and the stop metric's
  value recomputed from its definition next to the solver's report."""
  cfg, p, x, _ = _problem(setup, Arch.RNN)
  f = lambda v: implicit_map(p, x, v, cfg.arch)
  out = {}
  sols = {}
  for solver in Solver:
    sols[solver] = solve(f, zero_state(x, cfg), SolverConfig(solver, tol=1e-10, max_iter=5000))
    out[f"iterations_{solver.value}"] = int(sols[solver].iterations)
  out["max_abs_diff"] = float(
    jnp.max(jnp.abs(sols[Solver.PICARD].value - sols[Solver.ANDERSON].value))
  )
  k = 5
  a = solve(f, zero_state(x, cfg), SolverConfig(tol=0.0, max_iter=k))
  b = solve(f, zero_state(x, cfg), SolverConfig(tol=0.0, max_iter=k - 1))
  want = jnp.max(
    jnp.linalg.norm(a.value - b.value, axis=1) / (1e-5 + jnp.linalg.norm(b.value, axis=1))
  )
  out["stop_metric_rel_err"] = float(jnp.abs(a.residual - want) / want)
  return out


def local_update_vs_explicit(setup: Setup = Setup()) -> float:
  """The VJP form (∂θ f)ᵀe* vs the explicit outer products for the rnn:
  ΔW = Σ_b e*_b tanh(v*_b)ᵀ, ΔU = Σ_b e*_b x_bᵀ, Δb = Δb_in = Σ_b e*_b,
  ΔD = Σ_b u*_b tanh(v*_b)ᵀ, Δc = Σ_b u*_b. Returns the relative difference."""
  cfg, p, x, y = _problem(setup, Arch.RNN)
  ctrl = M.ControlConfig(alpha=setup.alpha, solver=TIGHT)
  s, e, u = jax.jit(lambda q: M.lcp_state(q, x, y, cfg, ctrl, M.GradConfig(), M.Method.LCP_DI))(p)
  vjp_form = M.local_update(p, x, s, e, u, cfg.arch)
  r = jnp.tanh(s.v)
  explicit = {
    "u": e.T @ x,
    "b_in": e.sum(0),
    "w": e.T @ r,
    "b": e.sum(0),
    "d": u.T @ r,
    "c": u.sum(0),
  }
  return _rel(vjp_form, explicit)


def all_identities(setup: Setup = Setup()) -> dict:
  """Every identity as numbers (float64), for identities.json."""
  with float64():
    return {
      "rbp_vs_bptt_200_rel": rbp_vs_bptt(setup),
      "bp_vs_rbp_ff_rel": bp_vs_rbp_ff(setup),
      "di_residuals_rnn": di_equilibrium_residuals(setup, Arch.RNN),
      "di_residuals_ff": di_equilibrium_residuals(setup, Arch.FF),
      "lcp_theorem_fd_rel": least_control_theorem(setup),
      "weak_control_cosine": weak_control_cosine(setup),
      "weak_control_literal_alpha1e3": weak_control_literal(setup),
      "picard_vs_anderson": picard_vs_anderson(setup),
      "local_update_vs_explicit_rel": local_update_vs_explicit(setup),
      "setup": dataclasses.asdict(setup),
    }
