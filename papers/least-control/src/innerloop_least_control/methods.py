"""Learning rules for equilibrium networks: the least-control variants and the baselines.

Shape notation as in `model`: B examples, N state size, C classes.

Least control (the controlled dynamics of the reference code, Euler steps with dt = 1, every
variable updated from the old values at once; `tau_u` = 1 in the paper's settings):
    u    = k_i·u_i − k_p·∂L/∂y(y)                      the controller's output
    e   <- (∂f/∂v)ᵀ e + (∂dec/∂v)ᵀ u                   DI: dynamic inversion, two VJPs
           (KP: the same VJPs through the feedback copies fw, fd; LF: e = u q, see below)
    v   <- f(x, v) + e
    y   <- dec(v) + u
    u_i <- u_i + (1/τ_u)·(−∂L/∂y(y) − α·u_i)
At the controlled equilibrium (v*, y*, e*, u*) the parameter update is the local rule
    Δθ_f ∝ (∂θ f(x, v*))ᵀ e*,   Δθ_dec ∝ (∂θ dec(v*))ᵀ u*,
computed here as one VJP each: it is the gradient of the surrogate
    S(θ) = −⟨e*, f_θ(x, v*)⟩ − ⟨u*, dec_θ(v*)⟩      (e*, u*, v* held fixed)
so the optimiser, which descends S, moves θ along +(∂θ f)ᵀe*. The decoder's own backprop
into v is discarded: e* replaces the whole gradient at v*.

LF (linear feedback, the reference code's rule): e = u q with a buffer q (C, N) (the code's
Q (N, C) is qᵀ), initialised N(0, 1/C), one for the whole state (ff: both blocks). The LF
step uses the new e at once, v <- f(x, v) + u q. The update modulates the control by the
activation's slope, Δθ_f ∝ (∂θ f)ᵀ(σ'(v*) ⊙ e*). After each controlled solve q learns from
a separate noisy run started at the controlled equilibrium (u_ref = u*), `lf_noise_steps`
Euler steps with dt' = 1/T² (T the time-scale factor): v stays fast, y and u_i run T² slower,
and an Ornstein–Uhlenbeck noise ε enters v with the feedback:
    ε    <- ε + (T/τ_ε)(−dt' ε + √dt' ξ),    ξ ~ N(0, I)
    v_fb  = u q + σ ε
    v    <- f(x, v) + v_fb
    y    <- y + dt'(dec(v) − y + u),   u_i <- u_i + (dt'/τ_u)(−∂L/∂y(y) − α u_i)
    ΔQ_noise += −(u − u_ref) v_fbᵀ / σ²          (summed over steps, batch mean)
then q <- q + (1/τ_Q)(ΔQ_noise − wd_Q q). The noise that excites v reaches u through the
output and the slow controller, so ΔQ_noise correlates u's response with the noise that
caused it: with q = 0 and linear dynamics its expectation is a positive multiple of the
transposed hidden-to-output Jacobian when the recurrence is a multiple of I (tested).
`LCP_LF_JAC` keeps our earlier stand-in (q tracks the batch-mean Jacobian from zero, no σ'),
a labelled deviation.

EBD (energy-based direct minimisation): Adam on (v, y) over
    E = ½‖v − f(x, v)‖² + ½‖y − dec(v)‖² + (1/α)·L(y),   e* = v* − f(v*), u* = y* − dec(v*).
Its stationary points are the DI equilibria with k_i = 1, k_p = 0, and H(θ) = E(v*, y*; θ)
has ∇θ H = −(∂θ f)ᵀe* − (∂θ dec)ᵀu* (the least-control gradient theorem; tested).

Baselines: BP (ff only: autodiff through the 3-step forward pass), RBP (implicit
differentiation of the free equilibrium: core.fixed_point), BPTT (autodiff through K
unrolled Picard steps from v = 0).

EP (equilibrium propagation, ours: not in the paper nor its code; rnn-sym only, the one model
here with an energy E, see `model.hopfield_energy`): a free phase v⁰ (the fixed point of f
from rest) and a nudged phase v^β, the stationary point of E + β·L(dec(v)) relaxed from v⁰,
which is the fixed point of v <- f(x, v) − β ∂L/∂ρ (the ρ' of ∂E/∂v cancels); then
    Δθ ∝ −(1/β) [∂θ(E + βL)(v^β) − ∂θ E(v⁰)]  → −∇θ L(v⁰(θ)) as β → 0 (tested),
a two-phase rule with an infinitesimal signal, the contrast the paper draws with least control.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from innerloop_core.config import ConfigError, added_field, parse_enum
from innerloop_core.fixed_point import Solution, SolverConfig, fixed_point, solve, unrolled
from innerloop_least_control.model import (
  FEEDBACK_PREFIX,
  Arch,
  ModelConfig,
  Params,
  activation_slope,
  decoder,
  forward_params,
  hopfield_energy,
  implicit_map,
  mean_cross_entropy,
  readout,
  unrolled_forward,
  zero_state,
)


class Method(enum.Enum):
  BP = "bp"
  RBP = "rbp"
  BPTT = "bptt"
  LCP_DI = "lcp-di"
  LCP_KP = "lcp-kp"  # dynamic inversion through Kolen–Pollack feedback weights
  LCP_LF = "lcp-lf"  # linear feedback e = u q, q learned from a noisy run (reference code)
  LCP_LF_JAC = "lcp-lf-jac"  # ours: q tracks the batch-mean Jacobian from zero (deviation)
  LCP_EBD = "lcp-ebd"
  EP = "ep"  # ours, not in the paper: equilibrium propagation (rnn-sym)

  @property
  def is_lcp(self) -> bool:
    return self.value.startswith("lcp")

  @property
  def is_lf(self) -> bool:
    return self in (Method.LCP_LF, Method.LCP_LF_JAC)


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
  lf_noise: float = 0.01  # σ of the noise that teaches q (both LF rules)
  lf_rate: float = 0.05  # LCP_LF_JAC: q <- q + rate·(ΔQ_noise − q − lf_wd·q) per step (ours)
  lf_wd: float = 0.01  # wd_Q (both LF rules)
  # LCP_LF, the reference code's command line (MNIST): τ_Q, time-scale factor, τ_ε (the
  # argument's default) and the noisy run's length (the solver's max_iter: the noise keeps the
  # stop rule from firing). Added after runs were written: at these defaults they leave the
  # other rows' fingerprints alone.
  lf_tau_q: float = added_field(1e5)
  lf_timescale: float = added_field(5.0)
  lf_tau_eps: float = added_field(1.0)
  lf_noise_steps: int = added_field(800)
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
  # EP (ours); added after runs were written (the other rows' fingerprints stay).
  ep_beta: float = added_field(0.1)
  ep_solver: SolverConfig = added_field(SolverConfig(tol=1e-6, max_iter=800))


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
  if not method.is_lf:  # DI, KP: `di_step`, the control fed back through fb's VJPs
    fb = feedback_params(p, method)
    return di_step(
      lambda v: implicit_map(p, x, v, arch),
      lambda v: decoder(p, v),
      lambda y: output_error(y, labels),
      s,
      ctrl,
      feedback=(lambda v: implicit_map(fb, x, v, arch), lambda v: decoder(fb, v)),
    )
  dldy = output_error(s.y, labels)
  u = ctrl.k_i * s.u_i - ctrl.k_p * dldy
  e = u @ p["q"]
  # The reference's LF step feeds the new e = u q into v at once; our LF_JAC uses the old e,
  # as DI and KP do.
  v = implicit_map(p, x, s.v, arch) + (e if method is Method.LCP_LF else s.e)
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
  if method is Method.LCP_LF_JAC:
    e = u @ p["q"]
  return s, e, u


def update_control(
  p: Params, x: jax.Array, s: Controlled, e: jax.Array, arch: Arch, method: Method
) -> jax.Array:
  """The hidden control the weight update uses (B, N): e*, or for the reference LF rule
  σ'(v) ⊙ e* at v = f(x, v*) + e* (where the code reads the slope)."""
  if method is not Method.LCP_LF:
    return e
  return activation_slope(implicit_map(p, x, s.v, arch) + e, arch) * e


def lf_noise_signal(
  f: Callable[[jax.Array], jax.Array],
  dec: Callable[[jax.Array], jax.Array],
  dldy: Callable[[jax.Array], jax.Array],
  q: jax.Array,
  start: Controlled,
  u_ref: jax.Array,
  key: jax.Array,
  ctrl: ControlConfig,
) -> jax.Array:
  """ΔQ_noise (C, N) of the reference LF rule: the noisy controlled run (module docstring)
  from `start` for ctrl.lf_noise_steps steps, Σ_k −(u_k − u_ref) v_fb,kᵀ/σ², batch mean.

  f: v (B, N) -> f(x, v); dec: v -> logits (B, C); dldy: y (B, C) -> ∂L/∂y; start.e unused."""
  sigma, t = ctrl.lf_noise, ctrl.lf_timescale
  dt = 1.0 / t**2  # dt' = dt/T² (dt = 1): y, u_i and ε's drift; v steps by T²·dt' = 1
  k0, k_steps = jax.random.split(key)
  eps0 = jax.random.normal(k0, start.v.shape, start.v.dtype)

  def step(carry, k):
    v, y, u_i, eps, acc = carry
    g = dldy(y)
    u = ctrl.k_i * u_i - ctrl.k_p * g
    xi = jax.random.normal(k, eps.shape, eps.dtype)
    v_fb = u @ q + sigma * eps
    acc = acc - jnp.einsum("bc,bn->cn", u - u_ref, v_fb) / sigma**2
    v_new = f(v) + v_fb
    y_new = y + dt * (dec(v) - y + u)
    u_i_new = u_i + dt / ctrl.tau_u * (-g - ctrl.alpha * u_i)
    eps_new = eps + t / ctrl.lf_tau_eps * (-dt * eps + jnp.sqrt(dt) * xi)
    return (v_new, y_new, u_i_new, eps_new, acc), None

  carry = (start.v, start.y, start.u_i, eps0, jnp.zeros_like(q))
  keys = jax.random.split(k_steps, ctrl.lf_noise_steps)
  (_, _, _, _, acc), _ = jax.lax.scan(step, carry, keys)
  return acc / start.v.shape[0]


def lf_buffer_step(
  p: Params,
  x: jax.Array,
  labels: jax.Array,
  s: Controlled,
  e: jax.Array,
  u: jax.Array,
  key: jax.Array,
  arch: Arch,
  ctrl: ControlConfig,
  method: Method,
) -> jax.Array:
  """ΔQ (C, N), the change of the LF buffer this training step (from the weights before the
  step, as the reference code learns Q before the optimiser steps)."""
  q = p["q"]
  if method is Method.LCP_LF_JAC:
    dq = lf_noise_estimate(p, x, s.v, arch, key, ctrl.lf_noise, ctrl.solver)
    return ctrl.lf_rate * (dq - q - ctrl.lf_wd * q)
  # The noisy run starts where the code re-attaches the equilibrium to its graph.
  v0 = implicit_map(p, x, s.v, arch) + e
  start = Controlled(v0, decoder(p, v0) + u, s.u_i, e)
  signal = lf_noise_signal(
    lambda v: implicit_map(p, x, v, arch),
    lambda v: decoder(p, v),
    lambda y: output_error(y, labels),
    q,
    start,
    u,
    key,
    ctrl,
  )
  return (signal - ctrl.lf_wd * q) / ctrl.lf_tau_q  # dt = 1


def lf_noise_estimate(
  p: Params, x: jax.Array, v: jax.Array, arch: Arch, key: jax.Array, sigma: float, solver
) -> jax.Array:
  """LCP_LF_JAC's ΔQ_noise (C, N): batch mean of δy ξᵀ/σ², where ξ ~ N(0, σ²) perturbs the
  hidden dynamics at v and δy is the linearised output response, δv = (∂f/∂v) δv + ξ,
  δy = (∂dec/∂v) δv. Its expectation is the network's hidden-to-output Jacobian
  J_dec (I − ∂f/∂v)⁻¹, averaged over the batch (our rule; see README)."""
  xi = sigma * jax.random.normal(key, v.shape, v.dtype)
  _, jvp_f = jax.linearize(lambda vv: implicit_map(p, x, vv, arch), v)
  dv = solve(lambda d: jvp_f(d) + xi, xi, solver).value
  _, dy = jax.jvp(lambda vv: decoder(p, vv), (v,), (dv,))
  return jnp.einsum("bc,bn->cn", dy, xi) / (sigma**2 * x.shape[0])


def ep_phases(
  p: Params, x: jax.Array, labels: jax.Array, cfg: ModelConfig, grad_cfg: GradConfig
) -> tuple[jax.Array, jax.Array]:
  """EP's free and nudged equilibria (v⁰, v^β), each (B, N); the nudged phase starts at v⁰."""
  p = jax.lax.stop_gradient(p)
  arch, beta = cfg.arch, grad_cfg.ep_beta
  v0 = solve(lambda v: implicit_map(p, x, v, arch), zero_state(x, cfg), grad_cfg.ep_solver).value
  dl_dr = jax.grad(lambda r: mean_cross_entropy(readout(p, r), labels))

  def nudged(v):
    return implicit_map(p, x, v, arch) - beta * dl_dr(jnp.tanh(v))

  return v0, solve(nudged, v0, grad_cfg.ep_solver).value


def ep_surrogate(
  p: Params,
  x: jax.Array,
  labels: jax.Array,
  v0: jax.Array,
  vb: jax.Array,
  arch: Arch,
  beta: float,
) -> jax.Array:
  """[(E + βL)(v^β) − E(v⁰)]/β with the states held fixed: its θ-gradient is EP's estimate
  of ∇θ L (the optimiser descends it)."""
  v0, vb = jax.lax.stop_gradient((v0, vb))
  nudged = hopfield_energy(p, x, vb, arch) + beta * mean_cross_entropy(decoder(p, vb), labels)
  return (nudged - hopfield_energy(p, x, v0, arch)) / beta


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
    if arch.recurrent:
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
  if method is Method.EP:
    if arch is not Arch.RNN_SYM:
      raise ConfigError("method 'ep' needs an energy: use arch 'rnn-sym'")
    v0, vb = ep_phases(p, x, labels, cfg, grad_cfg)
    surrogate = ep_surrogate(p, x, labels, v0, vb, arch, grad_cfg.ep_beta)
    ce = mean_cross_entropy(decoder(p, v0), labels)
    return surrogate - jax.lax.stop_gradient(surrogate) + jax.lax.stop_gradient(ce)
  s, e, u = lcp_state(p, x, labels, cfg, ctrl, grad_cfg, method)
  surrogate = lcp_surrogate(p, x, s, update_control(p, x, s, e, arch, method), u, arch)
  if method is Method.LCP_KP:
    # Kolen–Pollack: the feedback copies receive the forward weights' updates (same shapes)
    # and the same weight decay, so their difference decays away.
    delta = jax.lax.stop_gradient(local_update(p, x, s, e, u, arch))
    n = len(FEEDBACK_PREFIX)
    copies = [k for k in p if k.startswith(FEEDBACK_PREFIX)]
    kp_term = -sum(jnp.sum(p[k] * delta[k[n:]]) for k in copies)
    decay = sum(jnp.sum(p[k] ** 2) + jnp.sum(p[k[n:]] ** 2) for k in copies)
    surrogate = surrogate + kp_term + 0.5 * ctrl.kp_wd * decay
  if method.is_lf:
    # q is a buffer with its own rule: its "gradient" is −ΔQ, which the optimiser applies
    # verbatim (experiments._optimizer: no Adam, no clipping, no schedule).
    delta_q = lf_buffer_step(jax.lax.stop_gradient(p), x, labels, s, e, u, key, arch, ctrl, method)
    surrogate = surrogate - jnp.sum(p["q"] * jax.lax.stop_gradient(delta_q))
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


def _rnn_sym_map(px, v):
  p, x = px
  return implicit_map(p, x, v, Arch.RNN_SYM)


def _conv_rnn_map(px, v):
  p, x = px
  return implicit_map(p, x, v, Arch.CONV_RNN)


def _map_for(arch: Arch):
  return {
    Arch.RNN: _rnn_map,
    Arch.FF: _ff_map,
    Arch.CONV_FF: _conv_ff_map,
    Arch.RNN_SYM: _rnn_sym_map,
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
  return local_update(p, x, s, update_control(p, x, s, e, cfg.arch, method), u, cfg.arch)


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
