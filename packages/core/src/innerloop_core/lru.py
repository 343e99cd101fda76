"""The linear recurrent unit (LRU), its residual block, the pool_st readout, and the
gradient rules of online learning for it (Orvieto et al. 2023; Zucchet et al. 2023).

Shape notation:
    B  batch (any leading axes are flattened into one)
    T  time steps
    H  model width (d_model): the layer's input and output size
    N  recurrent units (d_hidden): the complex diagonal state

The layer, in the paper's equations (elementwise over the N units, h_0 = 0):
    λ = exp(−exp(ν_log) + i·exp(θ_log)),   γ = exp(γ_log)
    h_t = λ ⊙ h_{t−1} + γ ⊙ (B x_t)
    y_t = Re(C h_t) + D ⊙ x_t
with B ∈ ℂ^{N×H}, C ∈ ℂ^{H×N}, D ∈ ℝ^H stored as real and imaginary parts: λ is never a
complex parameter (an optimiser step on it could leave |λ| < 1), and the projections run as
real matmuls on real and imaginary parts, which measured ≈ 3.7x faster than complex matmuls on
CPU (design notes).

Gradient rules (`GradientRule`, a static choice of the forward pass). Each rule is written as
the same forward value with stop-gradients placed so that plain autodiff returns that rule's
gradient (the "equivalent formulation"; `online_trace_step` / `online_trace_grads` are the
streaming eligibility-trace reference it is tested against):
  BPTT      exact gradient, back-propagation through time.
  ONLINE    the paper's rule: exact within a layer (eligibility traces of λ, γ, B), only the
            current-step error between layers. Each layer feeds its input to the scan through a
            stop-gradient and adds a zero-valued term that carries the instantaneous input path
              h = Scan_λ(γ⊙B·sg(x)) + [sg(γ⊙B)·x − sg(γ⊙B·x)].
  ONE_STEP  1-step truncation: ∂h_t/∂λ = h_{t−1}, ∂h_t/∂(γ, B) = instantaneous.
  SPATIAL   no temporal credit at all: ∂h_t/∂λ = 0, ∂h_t/∂(γ, B) = instantaneous.
"""

from __future__ import annotations

import enum
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from innerloop_core.attention import LayerNorm
from innerloop_core.config import parse_enum
from innerloop_core.scans import ScanImpl, linear_scan

sg = jax.lax.stop_gradient


class GradientRule(enum.Enum):
  """Which gradient the recurrent layers let autodiff compute (see the module docstring)."""

  BPTT = "bptt"
  ONLINE = "online"
  ONE_STEP = "1-step"
  SPATIAL = "spatial"


# ---------------------------------------------------------------------------------------------
# Parametrisation and initialisation


def ring_init(
  key: jax.Array, d_hidden: int, r_min: float, r_max: float, max_phase: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(ν_log, θ_log, γ_log), each [N]: |λ| uniform on the ring r_min ≤ |λ| ≤ r_max (uniform
  in |λ|², i.e. uniform area density), arg λ uniform in [0, max_phase], and γ = √(1−|λ|²)
  normalising the stationary state variance of a white-noise input."""
  if not 0.0 <= r_min <= r_max <= 1.0:
    raise ValueError(f"ring_init needs 0 <= r_min <= r_max <= 1, got r_min={r_min} r_max={r_max}")
  k1, k2 = jax.random.split(key)
  u1 = jax.random.uniform(k1, (d_hidden,))
  u2 = jax.random.uniform(k2, (d_hidden,))
  nu = -0.5 * jnp.log(u1 * (r_max**2 - r_min**2) + r_min**2)
  theta = max_phase * u2
  modulus = jnp.exp(-nu)
  gamma = jnp.sqrt(1.0 - modulus**2)
  return jnp.log(nu), jnp.log(theta), jnp.log(gamma)


def exp_parametrization(
  nu_log: jax.Array, theta_log: jax.Array, gamma_log: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """(λ complex [N], γ real [N]) from the stored log-parameters:
  λ = exp(−exp(ν_log) + i·exp(θ_log)), γ = exp(γ_log)."""
  lam = jnp.exp(jax.lax.complex(-jnp.exp(nu_log), jnp.exp(theta_log)))
  return lam, jnp.exp(gamma_log)


def _real_matmul_in(x: jax.Array, w_re: jax.Array, w_im: jax.Array) -> jax.Array:
  """(W_re + i W_im) x for real x [..., H] and W [N, H] -> complex [..., N], as 2 real matmuls."""
  return jax.lax.complex(x @ w_re.T, x @ w_im.T)


def _real_part_out(h: jax.Array, w_re: jax.Array, w_im: jax.Array) -> jax.Array:
  """Re(W h) for complex h [..., N] and W [H, N] -> real [..., H], as 2 real matmuls."""
  return h.real @ w_re.T - h.imag @ w_im.T


# ---------------------------------------------------------------------------------------------
# The layer


class LRU(nnx.Module):
  """A linear recurrent unit: x [..., T, H] -> y [..., T, H] (module docstring)."""

  def __init__(
    self,
    d_model: int,
    d_hidden: int,
    *,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    key: jax.Array,
  ):
    k_ring, k_bre, k_bim, k_cre, k_cim, k_d = jax.random.split(key, 6)
    nu_log, theta_log, gamma_log = ring_init(k_ring, d_hidden, r_min, r_max, max_phase)
    self.d_model, self.d_hidden = d_model, d_hidden
    self.nu_log = nnx.Param(nu_log)
    self.theta_log = nnx.Param(theta_log)
    self.gamma_log = nnx.Param(gamma_log)
    # B's real and imaginary parts each with std 1/√(2H): E|B x|² matches a real N(0, 1/H).
    b_std = 1.0 / math.sqrt(2 * d_model)
    self.B_re = nnx.Param(b_std * jax.random.normal(k_bre, (d_hidden, d_model)))
    self.B_im = nnx.Param(b_std * jax.random.normal(k_bim, (d_hidden, d_model)))
    c_std = 1.0 / math.sqrt(d_hidden)
    self.C_re = nnx.Param(c_std * jax.random.normal(k_cre, (d_model, d_hidden)))
    self.C_im = nnx.Param(c_std * jax.random.normal(k_cim, (d_model, d_hidden)))
    self.D = nnx.Param(jax.random.normal(k_d, (d_model,)))

  def eigenvalues(self) -> tuple[jax.Array, jax.Array]:
    """(λ complex [N], γ real [N])."""
    return exp_parametrization(self.nu_log[...], self.theta_log[...], self.gamma_log[...])

  def drive(self, x: jax.Array, *, frozen: bool = False) -> jax.Array:
    """γ ⊙ (B x): real x [..., H] -> complex [..., N]. `frozen`: no gradient to γ and B."""
    _, gamma = self.eigenvalues()
    b_re, b_im = self.B_re[...], self.B_im[...]
    if frozen:
      gamma, b_re, b_im = sg(gamma), sg(b_re), sg(b_im)
    return _real_matmul_in(x, b_re, b_im) * gamma

  def hidden_states(
    self,
    x: jax.Array,
    *,
    rule: GradientRule | str = GradientRule.BPTT,
    impl: ScanImpl | str = ScanImpl.AUTO,
  ) -> jax.Array:
    """h [B, T, N] (complex) for x [B, T, H], with `rule`'s gradient (module docstring)."""
    rule = parse_enum(rule, GradientRule, "rule")
    lam, _ = self.eigenvalues()
    if rule is GradientRule.BPTT:
      b = self.drive(x)
      return linear_scan(jnp.broadcast_to(lam, b.shape), b, impl=impl)[0]
    if rule is GradientRule.ONLINE:
      # The scan sees its input through a stop-gradient, so a layer back-propagates through its
      # own recurrence (for its own λ, γ, B) but passes down only the current-step error, via
      # the zero-valued instantaneous term (both of its halves are the same floats).
      b = self.drive(sg(x))
      h = linear_scan(jnp.broadcast_to(lam, b.shape), b, impl=impl)[0]
      inst = self.drive(x, frozen=True)
      return h + (inst - sg(inst))
    # ONE_STEP and SPATIAL: the value of the exact recurrence, gradients from time t only.
    b = self.drive(x)
    h_value = sg(linear_scan(jnp.broadcast_to(lam, b.shape), b, impl=impl)[0])
    h = h_value + (b - sg(b))
    if rule is GradientRule.ONE_STEP:
      h_prev = jnp.pad(h_value, ((0, 0), (1, 0), (0, 0)))[:, :-1]  # h_{t−1}, with h_0 = 0
      step = lam * h_prev
      h = h + (step - sg(step))
    return h

  def readout(self, h: jax.Array, x: jax.Array) -> jax.Array:
    """y = Re(C h) + D ⊙ x: h [..., N] complex, x [..., H] -> [..., H]."""
    return _real_part_out(h, self.C_re[...], self.C_im[...]) + self.D[...] * x

  def __call__(
    self,
    x: jax.Array,
    *,
    rule: GradientRule | str = GradientRule.BPTT,
    impl: ScanImpl | str = ScanImpl.AUTO,
  ) -> jax.Array:
    """y [..., T, H] for x [..., T, H] (at least 2-D)."""
    if x.ndim < 2 or x.shape[-1] != self.d_model:
      raise ValueError(f"LRU expects x [..., T, {self.d_model}], got {x.shape}")
    lead, (steps, width) = x.shape[:-2], x.shape[-2:]
    flat = x.reshape((-1, steps, width))
    y = self.readout(self.hidden_states(flat, rule=rule, impl=impl), flat)
    return y.reshape(lead + (steps, width))


# ---------------------------------------------------------------------------------------------
# Streaming eligibility traces: the reference the stop-gradient formulation is tested against


class Traces(NamedTuple):
  """Eligibility traces of one LRU layer (complex, zero at t = 0).

  e_lam [B, N]: ∂h_t/∂λ,  e_gamma [B, N]: ∂h_t/∂γ,  e_B [B, N, H]: ∂h_t/∂B_re."""

  e_lam: jax.Array
  e_gamma: jax.Array
  e_B: jax.Array


def zero_traces(batch: int, d_hidden: int, d_model: int, dtype=jnp.complex64) -> Traces:
  return Traces(
    jnp.zeros((batch, d_hidden), dtype),
    jnp.zeros((batch, d_hidden), dtype),
    jnp.zeros((batch, d_hidden, d_model), dtype),
  )


def online_trace_step(
  traces: Traces,
  lam: jax.Array,
  gamma: jax.Array,
  h_prev: jax.Array,
  bx: jax.Array,
  x: jax.Array,
  rule: GradientRule | str = GradientRule.ONLINE,
) -> Traces:
  """Traces at t from traces at t−1: lam, gamma [N]; h_prev, bx = B x_t [B, N]; x_t [B, H].

  ONLINE:   e^λ_t = λ⊙e^λ_{t−1} + h_{t−1};  e^γ_t = λ⊙e^γ_{t−1} + B x_t;
            E^B_t = λ⊙E^B_{t−1} + γ x_tᵀ.
  ONE_STEP: e^λ_t = h_{t−1}; e^γ_t = B x_t; E^B_t = γ x_tᵀ.   SPATIAL: as ONE_STEP, e^λ_t = 0.
  """
  rule = parse_enum(rule, GradientRule, "rule")
  inst_B = gamma[None, :, None] * x[:, None, :].astype(traces.e_B.dtype)
  if rule is GradientRule.ONLINE:
    return Traces(
      lam * traces.e_lam + h_prev,
      lam * traces.e_gamma + bx,
      lam[None, :, None] * traces.e_B + inst_B,
    )
  if rule is GradientRule.BPTT:
    raise ValueError("BPTT has no eligibility traces; use autodiff through the scan")
  e_lam = h_prev if rule is GradientRule.ONE_STEP else jnp.zeros_like(h_prev)
  return Traces(e_lam, bx, inst_B)


def online_trace_grads(
  delta: jax.Array,
  traces: Traces,
  nu_log: jax.Array,
  theta_log: jax.Array,
  gamma_log: jax.Array,
) -> dict[str, jax.Array]:
  """One step's contribution to the recurrent parameters' gradients, summed over the batch.

  delta [B, N]: JAX's cotangent of the loss at h_t (∂L/∂Re h − i ∂L/∂Im h) through time-t paths
  only; then ∂L/∂p = Re Σ_t δ_t ⊙ ∂h_t/∂p for a real parameter p, which gives
    ∂ν_log = Re δ⊙e^λ⊙(−e^{ν_log} λ),  ∂θ_log = Re δ⊙e^λ⊙(i e^{θ_log} λ),  ∂γ_log = γ⊙Re δ⊙e^γ,
    ∂B_re = Re δ[:, None]⊙E^B,  ∂B_im = −Im δ[:, None]⊙E^B   (B_im enters as i·B_im).
  """
  lam, gamma = exp_parametrization(nu_log, theta_log, gamma_log)
  d_lam = delta * traces.e_lam
  d_b = delta[:, :, None] * traces.e_B
  return {
    "nu_log": jnp.sum((d_lam * (-jnp.exp(nu_log) * lam)).real, axis=0),
    "theta_log": jnp.sum((d_lam * (1j * jnp.exp(theta_log) * lam)).real, axis=0),
    "gamma_log": gamma * jnp.sum((delta * traces.e_gamma).real, axis=0),
    "B_re": jnp.sum(d_b.real, axis=0),
    "B_im": -jnp.sum(d_b.imag, axis=0),
  }


# ---------------------------------------------------------------------------------------------
# Readout and residual block


def pool_st(x: jax.Array) -> jax.Array:
  """Causal running mean over time with a straight-through backward: x [..., T, H] -> same.

  Forward: x̄_t = mean(x_1..x_t); backward: identity (x̄_t = x_t + sg(cummean_t − x_t)), so a
  loss at every step stays an instantaneous signal for the online rule."""
  steps = jnp.arange(1, x.shape[-2] + 1, dtype=x.dtype)[:, None]
  mean = jnp.cumsum(x, axis=-2) / steps
  return x + sg(mean - x)


class Dense(nnx.Module):
  """y = x W + b, W [in, out] LeCun-normal, b = 0."""

  def __init__(self, d_in: int, d_out: int, *, key: jax.Array):
    self.kernel = nnx.Param(jax.random.normal(key, (d_in, d_out)) / math.sqrt(d_in))
    self.bias = nnx.Param(jnp.zeros((d_out,)))

  def __call__(self, x: jax.Array) -> jax.Array:
    return x @ self.kernel[...] + self.bias[...]


def dropout_mask(key: jax.Array | None, shape: tuple[int, ...], rate: float) -> jax.Array | None:
  """Inverted-dropout mask of `shape` (1 where kept, scaled by 1/(1−rate)); None = no dropout."""
  if key is None or rate <= 0.0:
    return None
  keep = jax.random.bernoulli(key, 1.0 - rate, shape)
  return keep.astype(jnp.float32) / (1.0 - rate)


class BlockActivation(enum.Enum):
  """What follows the recurrent layer inside an `LRUBlock` (the reference code's activation)."""

  FULL_GLU = "full_glu"  # dropout(GLU(dropout(GELU(y)))): the paper's block
  NONE = "none"  # dropout(y): no activation, no GLU (Table 1's one-layer GRU)


class LRUBlock(nnx.Module):
  """Residual block: x + dropout(GLU(dropout(GELU(LRU(LayerNorm(x)))))), x [..., T, H].

  GLU(u) = (W1 u) ⊙ σ(W2 u). Dropout masks are drawn once per sequence and shared over time
  (shape [..., 1, H]), so that the block is the same function at every step, as the online
  rule needs; the keys come from the caller (no RNG state in the module). `recurrent` replaces
  the LRU by another layer with the same call signature (e.g. `dense_rnn.DenseRNN`); it is
  still stored as `self.lru`. `activation` NONE drops GELU and the GLU (x + dropout(y); the
  GLU weights are not created)."""

  def __init__(
    self,
    d_model: int,
    d_hidden: int,
    *,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    key: jax.Array,
    recurrent: nnx.Module | None = None,
    activation: BlockActivation = BlockActivation.FULL_GLU,
  ):
    k_lru, k_w1, k_w2 = jax.random.split(key, 3)
    # eps 1e-6 as in the reference LRU block (the attention stack uses 1e-5).
    self.norm = LayerNorm(d_model, eps=1e-6)
    if recurrent is None:
      recurrent = LRU(d_model, d_hidden, r_min=r_min, r_max=r_max, max_phase=max_phase, key=k_lru)
    self.lru = recurrent
    self.activation = activation
    if activation is BlockActivation.FULL_GLU:
      self.glu_value = Dense(d_model, d_model, key=k_w1)
      self.glu_gate = Dense(d_model, d_model, key=k_w2)

  def post(self, x: jax.Array, y: jax.Array, masks: tuple | None = None) -> jax.Array:
    """Everything after the LRU's output y: GELU, dropout, GLU, dropout, residual (NONE:
    dropout, residual)."""
    m1, m2 = masks if masks is not None else (None, None)
    if self.activation is BlockActivation.NONE:
      return x + (y if m1 is None else y * m1)
    z = jax.nn.gelu(y)
    if m1 is not None:
      z = z * m1
    z = self.glu_value(z) * jax.nn.sigmoid(self.glu_gate(z))
    if m2 is not None:
      z = z * m2
    return x + z

  def masks(self, key: jax.Array | None, lead: tuple[int, ...], rate: float) -> tuple | None:
    """The block's two dropout masks [*lead, 1, H] (None when no key or rate 0)."""
    if key is None or rate <= 0.0:
      return None
    k1, k2 = jax.random.split(key)
    shape = lead + (1, self.lru.d_model)
    return dropout_mask(k1, shape, rate), dropout_mask(k2, shape, rate)

  def __call__(
    self,
    x: jax.Array,
    *,
    dropout_key: jax.Array | None = None,
    dropout_rate: float = 0.0,
    rule: GradientRule | str = GradientRule.BPTT,
    impl: ScanImpl | str = ScanImpl.AUTO,
  ) -> jax.Array:
    """x [..., T, H] -> [..., T, H]."""
    masks = self.masks(dropout_key, x.shape[:-2], dropout_rate)
    return self.post(x, self.lru(self.norm(x), rule=rule, impl=impl), masks)
