"""Learning rules for equilibrium networks: the least-control variants and the baselines.

Shape notation as in `model`: B examples, N state size, C classes.

Least control (the controlled dynamics of the reference code, Euler steps with dt = 1, every
variable updated from the old values at once; `tau_u` = 1 in the paper's settings):
    u    = k_i·u_i − k_p·∂L/∂y(y)                      the controller's output
    e   <- (∂f/∂v)ᵀ e + (∂dec/∂v)ᵀ u                   DI: dynamic inversion, two VJPs
           (KP: the same VJPs through the feedback copies fw, fd; LF: e = u q)
    v   <- f(x, v) + e
    y   <- dec(v) + u
    u_i <- u_i + (1/τ_u)·(−∂L/∂y(y) − α·u_i)
At the controlled equilibrium (v*, y*, e*, u*) the parameter update is the local rule
    Δθ_f ∝ (∂θ f(x, v*))ᵀ e*,   Δθ_dec ∝ (∂θ dec(v*))ᵀ u*,
computed here as one VJP each: it is the gradient of the surrogate
    S(θ) = −⟨e*, f_θ(x, v*)⟩ − ⟨u*, dec_θ(v*)⟩      (e*, u*, v* held fixed)
so the optimiser, which descends S, moves θ along +(∂θ f)ᵀe*. The decoder's own backprop
into v is discarded: e* replaces the whole gradient at v*.

EBD (energy-based direct minimisation): Adam on (v, y) over
    E = ½‖v − f(x, v)‖² + ½‖y − dec(v)‖² + (1/α)·L(y),   e* = v* − f(v*), u* = y* − dec(v*).
Its stationary points are the DI equilibria with k_i = 1, k_p = 0, and H(θ) = E(v*, y*; θ)
has ∇θ H = −(∂θ f)ᵀe* − (∂θ dec)ᵀu* (the least-control gradient theorem; tested).

Baselines: BP (ff only: autodiff through the 3-step forward pass), RBP (implicit
differentiation of the free equilibrium: core.fixed_point), BPTT (autodiff through K
unrolled Picard steps from v = 0).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from innerloop_core.config import ConfigError, parse_enum
from innerloop_core.fixed_point import Solution, SolverConfig, fixed_point, solve, unrolled
from innerloop_least_control.model import (
  FEEDBACK_PREFIX,
  Arch,
  ModelConfig,
  Params,
  decoder,
  forward_params,
  implicit_map,
  mean_cross_entropy,
  unrolled_forward,
  zero_state,
)


class Method(enum.Enum):
  BP = "bp"
  RBP = "rbp"
  BPTT = "bptt"
  LCP_DI = "lcp-di"
  LCP_KP = "lcp-kp"  # dynamic inversion through Kolen–Pollack feedback weights
  LCP_LF = "lcp-lf"  # linear feedback e = u q, q learned from noise
  LCP_EBD = "lcp-ebd"

  @property
  def is_lcp(self) -> bool:
    return self.value.startswith("lcp")


class ControlStart(enum.Enum):
  """Where the controlled dynamics start: at rest (v = y = u_i = e = 0, the reference code) or
  at the free equilibrium (v°, dec(v°), 0, 0), the point the least-control problem measures
  the control from (ours: a labelled deviation, see README)."""

  REST = "rest"
  FREE = "free"


@dataclasses.dataclass(frozen=True)
class ControlConfig:
  alpha: float = 0.1  # leak of the integral controller
  k_i: float = 1.0
  k_p: float = 0.0
  tau_u: float = 1.0  # time constant of u_i; tau_u = a with alpha = 1/a is the weak-control form
  solver: SolverConfig = SolverConfig(tol=1e-6, max_iter=800, per_leaf=True)
  ebd_steps: int = 200  # inner Adam steps of LCP-EBD
  ebd_lr: float = 0.01
  ebd_init_free: bool = True  # start EBD at the free equilibrium (rnn) rather than at 0
  kp_wd: float = 1e-6  # weight decay on W, D and their KP copies, every step
  lf_noise: float = 0.01  # σ of the perturbations that estimate q
  lf_rate: float = 0.05  # q <- q + rate·(ΔQ_noise − q − lf_wd·q) per training step (ours)
  lf_wd: float = 0.01
  start: ControlStart = ControlStart.REST

  def __post_init__(self):
    object.__setattr__(self, "start", parse_enum(self.start, ControlStart, "control.start"))
    if self.alpha <= 0 or self.tau_u <= 0:
      raise ConfigError(f"control.alpha and control.tau_u must be > 0, got {self}")


@dataclasses.dataclass(frozen=True)
class GradConfig:
  """Solvers of the gradient-based baselines and of evaluation."""

  forward: SolverConfig = SolverConfig(tol=1e-4, max_iter=200)  # RBP forward / evaluation
  backward: SolverConfig = SolverConfig(tol=1e-4, max_iter=200)  # RBP adjoint
  bptt_steps: int = 30


class Controlled(NamedTuple):
  v: jax.Array  # (B, N) state
  y: jax.Array  # (B, C) output population
  u_i: jax.Array  # (B, C) integral controller
  e: jax.Array  # (B, N) hidden control


def output_error(y: jax.Array, labels: jax.Array) -> jax.Array:
  """∂L/∂y of the mean cross-entropy: (softmax(y) − onehot)/B."""
  return (jax.nn.softmax(y) - jax.nn.one_hot(labels, y.shape[1], dtype=y.dtype)) / y.shape[0]


def feedback_params(p: Params, method: Method) -> Params:
  """The weights the control signal travels back through: the forward ones (DI) or the
  Kolen–Pollack copies (KP)."""
  if method is Method.LCP_KP:
    n = len(FEEDBACK_PREFIX)
    return {**p, **{k[n:]: v for k, v in p.items() if k.startswith(FEEDBACK_PREFIX)}}
  return p


def controlled_step(
  p: Params,
  x: jax.Array,
  labels: jax.Array,
  s: Controlled,
  arch: Arch,
  ctrl: ControlConfig,
  method: Method,
) -> Controlled:
  """One Euler step (dt = 1) of the controlled dynamics, all variables from the old state."""
  dldy = output_error(s.y, labels)
  u = ctrl.k_i * s.u_i - ctrl.k_p * dldy
  if method is Method.LCP_LF:
    e = u @ p["q"]
  else:
    fb = feedback_params(p, method)
    _, vjp_f = jax.vjp(lambda v: implicit_map(fb, x, v, arch), s.v)
    _, vjp_dec = jax.vjp(lambda v: decoder(fb, v), s.v)
    e = vjp_f(s.e)[0] + vjp_dec(u)[0]
  v = implicit_map(p, x, s.v, arch) + s.e
  y = decoder(p, s.v) + u
  u_i = s.u_i + (-dldy - ctrl.alpha * s.u_i) / ctrl.tau_u
  return Controlled(v, y, u_i, e)


def controlled_equilibrium(
  p: Params,
  x: jax.Array,
  labels: jax.Array,
  cfg: ModelConfig,
  ctrl: ControlConfig,
  method: Method,
  start: Controlled | None = None,
) -> tuple[Controlled, Solution]:
  """Runs the controlled dynamics from rest (or `start`) to the solver's tolerance."""
  if start is None:
    c = cfg.num_classes
    zc = jnp.zeros((x.shape[0], c), x.dtype)
    start = Controlled(zero_state(x, cfg), zc, zc, zero_state(x, cfg))
  sol = solve(
    lambda s: controlled_step(p, x, labels, s, cfg.arch, ctrl, method), start, ctrl.solver
  )
  return sol.value, sol


def di_step(
  f: Callable[[jax.Array], jax.Array],
  dec: Callable[[jax.Array], jax.Array],
  error: Callable[[jax.Array], jax.Array],
  s: Controlled,
  ctrl: ControlConfig,
  feedback: tuple[Callable, Callable] | None = None,
) -> Controlled:
  """One Euler step (dt = 1) of the DI controlled dynamics for any maps, every variable from
  the old state: f: v (B, N) -> (B, N), dec: v -> y (B, C), error: y -> ∂L/∂y (B, C);
  `feedback` = the (f, dec) the control travels back through (KP: the copies; default f, dec)."""
  f_fb, dec_fb = feedback or (f, dec)
  dldy = error(s.y)
  u = ctrl.k_i * s.u_i - ctrl.k_p * dldy
  _, vjp_f = jax.vjp(f_fb, s.v)
  _, vjp_dec = jax.vjp(dec_fb, s.v)
  e = vjp_f(s.e)[0] + vjp_dec(u)[0]
  u_i = s.u_i + (-dldy - ctrl.alpha * s.u_i) / ctrl.tau_u
  return Controlled(f(s.v) + s.e, dec(s.v) + u, u_i, e)


def di_equilibrium(
  f: Callable[[jax.Array], jax.Array],
  dec: Callable[[jax.Array], jax.Array],
  error: Callable[[jax.Array], jax.Array],
  v0: jax.Array,
  num_outputs: int,
  ctrl: ControlConfig,
) -> tuple[Controlled, Solution]:
  """`di_step` iterated from v0 (B, N) with y, u_i and e at rest, to ctrl.solver's tolerance."""
  zy = jnp.zeros((v0.shape[0], num_outputs), v0.dtype)
  start = Controlled(v0, zy, zy, jnp.zeros_like(v0))
  sol = solve(lambda s: di_step(f, dec, error, s, ctrl), start, ctrl.solver)
  return sol.value, sol


def control_of(p: Params, x: jax.Array, s: Controlled, arch: Arch) -> tuple[jax.Array, jax.Array]:
  """(e*, u*) read off a state as the equilibrium defines them: v − f(x, v), y − dec(v)."""
  return s.v - implicit_map(p, x, s.v, arch), s.y - decoder(p, s.v)


def energy(
  p: Params, x: jax.Array, labels: jax.Array, v: jax.Array, y: jax.Array, arch: Arch, alpha: float
) -> jax.Array:
  """E(v, y) = ½‖v − f(x, v)‖² + ½‖y − dec(v)‖² + L(y)/α (sums over the batch, L mean)."""
  e, u = v - implicit_map(p, x, v, arch), y - decoder(p, v)
  return 0.5 * jnp.sum(e**2) + 0.5 * jnp.sum(u**2) + mean_cross_entropy(y, labels) / alpha


def ebd_minimize(
  p: Params,
  x: jax.Array,
  labels: jax.Array,
  cfg: ModelConfig,
  ctrl: ControlConfig,
  grad_cfg: GradConfig,
) -> Controlled:
  """LCP-EBD: `ebd_steps` of Adam on E over (v, y); e*, u* from the result."""
  if ctrl.ebd_init_free:
    v0 = solve(lambda v: implicit_map(p, x, v, cfg.arch), zero_state(x, cfg), grad_cfg.forward)
    v0 = v0.value
  else:
    v0 = zero_state(x, cfg)
  y0 = decoder(p, v0)
  opt = optax.adam(ctrl.ebd_lr)
  grad_e = jax.grad(lambda vy: energy(p, x, labels, vy[0], vy[1], cfg.arch, ctrl.alpha))

  def step(carry, _):
    vy, state = carry
    updates, state = opt.update(grad_e(vy), state, vy)
    return (optax.apply_updates(vy, updates), state), None

  ((v, y), _), _ = jax.lax.scan(step, ((v0, y0), opt.init((v0, y0))), None, ctrl.ebd_steps)
  e, u = control_of(p, x, Controlled(v, y, y, v), cfg.arch)
  return Controlled(v, y, u / ctrl.k_i, e)


def lcp_surrogate(p: Params, x: jax.Array, s: Controlled, e: jax.Array, u: jax.Array, arch: Arch):
  """S(θ) = −⟨e*, f_θ(x, v*)⟩ − ⟨u*, dec_θ(v*)⟩: ∇θ S = −(∂θ f)ᵀe* − (∂θ dec)ᵀu*."""
  v, e, u = jax.lax.stop_gradient((s.v, e, u))
  return -jnp.sum(e * implicit_map(p, x, v, arch)) - jnp.sum(u * decoder(p, v))


def lcp_state(
  p: Params,
  x: jax.Array,
  labels: jax.Array,
  cfg: ModelConfig,
  ctrl: ControlConfig,
  grad_cfg: GradConfig,
  method: Method,
) -> tuple[Controlled, jax.Array, jax.Array]:
  """The controlled equilibrium of an LCP method and its controls (e*, u*)."""
  p = jax.lax.stop_gradient(p)
  if method is Method.LCP_EBD:
    s = ebd_minimize(p, x, labels, cfg, ctrl, grad_cfg)
    return s, s.e, ctrl.k_i * s.u_i
  start = None
  if ctrl.start is ControlStart.FREE:
    free = SolverConfig(ctrl.solver.solver, ctrl.solver.tol, ctrl.solver.max_iter)
    v0 = solve(lambda v: implicit_map(p, x, v, cfg.arch), zero_state(x, cfg), free).value
    zc = jnp.zeros((x.shape[0], cfg.num_classes), x.dtype)
    start = Controlled(v0, decoder(p, v0), zc, jnp.zeros_like(v0))
  s, _ = controlled_equilibrium(p, x, labels, cfg, ctrl, method, start)
  # The control actually applied at the equilibrium (the state's e and u = k_i u_i − k_p dL/dy).
  u = ctrl.k_i * s.u_i - ctrl.k_p * output_error(s.y, labels)
  e = s.e
  if method is Method.LCP_LF:
    e = u @ p["q"]
  return s, e, u


def lf_noise_estimate(
  p: Params, x: jax.Array, v: jax.Array, arch: Arch, key: jax.Array, sigma: float, solver
) -> jax.Array:
  """ΔQ_noise (C, N): batch mean of δy ξᵀ/σ², where ξ ~ N(0, σ²) perturbs the hidden
  dynamics at v and δy is the linearised output response, δv = (∂f/∂v) δv + ξ,
  δy = (∂dec/∂v) δv. Its expectation is the network's hidden-to-output Jacobian
  J_dec (I − ∂f/∂v)⁻¹, averaged over the batch (our rule; see README)."""
  xi = sigma * jax.random.normal(key, v.shape, v.dtype)
  _, jvp_f = jax.linearize(lambda vv: implicit_map(p, x, vv, arch), v)
  dv = solve(lambda d: jvp_f(d) + xi, xi, solver).value
  _, dy = jax.jvp(lambda vv: decoder(p, vv), (v,), (dv,))
  return jnp.einsum("bc,bn->cn", dy, xi) / (sigma**2 * x.shape[0])


def training_loss(
  p: Params,
  x: jax.Array,
  labels: jax.Array,
  key: jax.Array,
  cfg: ModelConfig,
  method: Method,
  ctrl: ControlConfig,
  grad_cfg: GradConfig,
) -> jax.Array:
  """A scalar whose value is the batch's cross-entropy and whose gradient w.r.t. p is what the
  method feeds the optimiser (autodiff for BP/RBP/BPTT, the local rule for LCP)."""
  arch = cfg.arch
  if method is Method.BP:
    if arch is Arch.RNN:
      raise ConfigError("method 'bp' needs a feedforward arch (use 'rbp' or 'bptt' for rnn)")
    return mean_cross_entropy(decoder(p, unrolled_forward(p, x, cfg)), labels)
  if method is Method.RBP:
    sol = fixed_point(
      _map_for(arch), (p, x), zero_state(x, cfg), grad_cfg.forward, grad_cfg.backward
    )
    return mean_cross_entropy(decoder(p, sol.value), labels)
  if method is Method.BPTT:
    v = unrolled(lambda v: implicit_map(p, x, v, arch), zero_state(x, cfg), grad_cfg.bptt_steps)
    return mean_cross_entropy(decoder(p, v), labels)
  s, e, u = lcp_state(p, x, labels, cfg, ctrl, grad_cfg, method)
  surrogate = lcp_surrogate(p, x, s, e, u, arch)
  if method is Method.LCP_KP:
    # Kolen–Pollack: the feedback copies receive the forward weights' updates (same shapes)
    # and the same weight decay, so their difference decays away.
    delta = jax.lax.stop_gradient(local_update(p, x, s, e, u, arch))
    n = len(FEEDBACK_PREFIX)
    copies = [k for k in p if k.startswith(FEEDBACK_PREFIX)]
    kp_term = -sum(jnp.sum(p[k] * delta[k[n:]]) for k in copies)
    decay = sum(jnp.sum(p[k] ** 2) + jnp.sum(p[k[n:]] ** 2) for k in copies)
    surrogate = surrogate + kp_term + 0.5 * ctrl.kp_wd * decay
  if method is Method.LCP_LF:
    # q is a buffer: its "gradient" q − ΔQ_noise + wd·q makes plain SGD with rate lf_rate an
    # exponential average of the noise estimates (the optimiser gives q its own SGD).
    dq = lf_noise_estimate(
      jax.lax.stop_gradient(p),
      x,
      jax.lax.stop_gradient(s.v),
      arch,
      key,
      ctrl.lf_noise,
      ctrl.solver,
    )
    q = p["q"]
    surrogate = surrogate + jnp.sum(q * jax.lax.stop_gradient(q - dq + ctrl.lf_wd * q))
  ce = mean_cross_entropy(decoder(p, s.v), labels)
  return surrogate - jax.lax.stop_gradient(surrogate) + jax.lax.stop_gradient(ce)


def local_update(p, x, s, e, u, arch) -> Params:
  """((∂θ f)ᵀe*, (∂θ dec)ᵀu*) for the forward parameters: one VJP of f and one of dec."""
  return jax.grad(lambda q: -lcp_surrogate(q, x, s, e, u, arch))(forward_params(p))


def _rnn_map(px, v):
  p, x = px
  return implicit_map(p, x, v, Arch.RNN)


def _ff_map(px, v):
  p, x = px
  return implicit_map(p, x, v, Arch.FF)


def _conv_ff_map(px, v):
  p, x = px
  return implicit_map(p, x, v, Arch.CONV_FF)


def _conv_rnn_map(px, v):
  p, x = px
  return implicit_map(p, x, v, Arch.CONV_RNN)


def _map_for(arch: Arch):
  return {
    Arch.RNN: _rnn_map,
    Arch.FF: _ff_map,
    Arch.CONV_FF: _conv_ff_map,
    Arch.CONV_RNN: _conv_rnn_map,
  }[arch]


def lcp_update(
  p: Params,
  x: jax.Array,
  labels: jax.Array,
  cfg: ModelConfig,
  ctrl: ControlConfig,
  grad_cfg: GradConfig,
  method: Method,
) -> Params:
  """The local update Δθ = ((∂θ f)ᵀe*, (∂θ dec)ᵀu*) of the forward parameters (ascent
  direction; compare with −∇θ L)."""
  s, e, u = lcp_state(p, x, labels, cfg, ctrl, grad_cfg, method)
  return local_update(p, x, s, e, u, cfg.arch)


def rbp_gradient(p: Params, x, labels, cfg: ModelConfig, grad_cfg: GradConfig) -> Params:
  """∇θ L at the free equilibrium by recurrent backprop (forward parameters only)."""
  fwd = forward_params(p)

  def loss(q):
    sol = fixed_point(
      _map_for(cfg.arch), (q, x), zero_state(x, cfg), grad_cfg.forward, grad_cfg.backward
    )
    return mean_cross_entropy(decoder(q, sol.value), labels)

  return jax.grad(loss)(fwd)


def cosine(a: Params, b: Params) -> jax.Array:
  names = sorted(forward_params(a))
  fa = jnp.concatenate([a[n].ravel() for n in names])
  fb = jnp.concatenate([b[n].ravel() for n in names])
  return jnp.dot(fa, fb) / (jnp.linalg.norm(fa) * jnp.linalg.norm(fb))


def parse_method(value) -> Method:
  return parse_enum(value, Method, "method")
