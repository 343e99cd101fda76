"""Equilibrium networks: the implicit map f(x, v), the decoder, free equilibria.

Shape notation: B examples, D input features, H hidden units, C classes, N state size
(N = 2H for `ff`, whose state holds both hidden layers; N = H for `rnn`).

  ff   v = (v₁, v₂):  f(x, v) = (U x + b_in,  W tanh(v₁) + b)      a 2-hidden-layer tanh MLP
                      written as an equilibrium; it converges in 2 iterations from any v.
  rnn  f(x, v) = U x + b_in + W tanh(v) + b                           H fully recurrent units.
  rnn-sym  the rnn with W replaced by (W + Wᵀ)/2 (ours, for equilibrium propagation): its
       fixed points are the stationary points of the Hopfield energy `hopfield_energy` (no other
       model here has one: ff's and rnn's interactions are not symmetric).
  dec(v) = D tanh(v_last) + c, v_last = v₂ (ff) or v (rnn)            (the readout)
  conv-ff  the convolutional ReLU chain of Table 2 (module `conv`, N = 34 272).
  conv-rnn the DEQ-style residual block of Table 2 (module `conv_rnn`, N = 48·S·S).

Parameters live in an nnx.Module (for the shared training loop) and are read into a plain
dict for the maps, which are pure functions of (params, x, v). Weights are stored as
(fan_out, fan_in) like torch.nn.Linear and initialised like it, U(±1/√fan_in) for weights
and biases, as in the reference code. `fw`, `fd` are the Kolen–Pollack feedback copies of W
and D (same shapes), named `fb_<weight>`; `q` is the linear-feedback buffer (C, N), zero
(our LF_JAC rule) or N(0, 1/C) (the reference code's Q = qᵀ). They exist only when a method
needs them, and never enter f or dec.
"""

from __future__ import annotations

import dataclasses
import enum

import jax
import jax.numpy as jnp
from flax import nnx

from innerloop_core.config import parse_enum
from innerloop_core.fixed_point import Solution, SolverConfig, solve
from innerloop_least_control import conv, conv_rnn

Params = dict[str, jax.Array]


class Arch(enum.Enum):
  FF = "ff"
  RNN = "rnn"
  CONV_FF = "conv-ff"
  RNN_SYM = "rnn-sym"  # ours: symmetric W, so the network has an energy (EP)
  CONV_RNN = "conv-rnn"

  @property
  def recurrent(self) -> bool:
    """No explicit forward pass: trained by rbp / bptt / local rules, clipped."""
    return self in (Arch.RNN, Arch.RNN_SYM, Arch.CONV_RNN)


class BufferInit(enum.Enum):
  """The linear-feedback buffer q at initialisation."""

  ZERO = "zero"  # ours (LF_JAC): q tracks the Jacobian from nothing
  NORMAL = "normal"  # the reference code: N(0, 1/C) entries


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  arch: Arch = Arch.RNN
  input_dim: int = 64
  hidden: int = 128
  num_classes: int = 10
  kp_feedback: bool = False  # Kolen–Pollack feedback weights fw, fd
  linear_feedback: bool = False  # the LF buffer q
  buffer_init: BufferInit = BufferInit.ZERO

  def __post_init__(self):
    object.__setattr__(self, "arch", parse_enum(self.arch, Arch, "model.arch"))
    object.__setattr__(
      self, "buffer_init", parse_enum(self.buffer_init, BufferInit, "model.buffer_init")
    )
    if self.arch is Arch.CONV_RNN and (self.kp_feedback or self.linear_feedback):
      # As the reference code: its conv-rnn model supports RBP and LCP-DI only.
      raise ValueError("conv-rnn has no feedback copies or LF buffer: use rbp, bptt or lcp-di")

  @property
  def state_size(self) -> int:
    if self.arch is Arch.CONV_FF:
      return conv.STATE_SIZE
    if self.arch is Arch.CONV_RNN:
      return conv_rnn.state_size(self.input_dim)
    return 2 * self.hidden if self.arch is Arch.FF else self.hidden


def _uniform(key: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
  bound = 1.0 / jnp.sqrt(fan_in)
  return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


FEEDBACK_PREFIX = "fb_"  # Kolen–Pollack copies: fb_<weight>
BUFFER = "q"  # the linear-feedback buffer


def _forward_init(cfg: ModelConfig, key: jax.Array):
  """Forward parameters, the names of the weights the control travels back through, and
  one key per feedback copy."""
  if cfg.arch is Arch.CONV_FF:
    # The encoder's VJP never reaches the state (block 1 does not depend on v): no copy.
    k_fwd, k_fb = jax.random.split(key)
    fed_back = ("conv1", "conv2", "lin1", "lin2", "d")
    return conv.init(k_fwd, cfg.num_classes), fed_back, jax.random.split(k_fb, len(fed_back))
  if cfg.arch is Arch.CONV_RNN:
    return conv_rnn.init(key, cfg.input_dim, cfg.num_classes), (), ()
  h, d, c = cfg.hidden, cfg.input_dim, cfg.num_classes
  k = jax.random.split(key, 8)
  p = {
    "u": _uniform(k[0], (h, d), d),
    "b_in": _uniform(k[1], (h,), d),
    "w": _uniform(k[2], (h, h), h),
    "b": _uniform(k[3], (h,), h),
    "d": _uniform(k[4], (c, h), h),
    "c": _uniform(k[5], (c,), h),
  }
  return p, ("w", "d"), (k[6], k[7])


class EquilibriumNet(nnx.Module):
  def __init__(self, cfg: ModelConfig, key: jax.Array):
    p, fed_back, fb_keys = _forward_init(cfg, key)
    if cfg.kp_feedback:
      # Independent random feedback, "norm-normalised" as in the reference code: each copy
      # divided by its own Frobenius norm (unit norm, not the forward weight's norm: at hidden
      # 64 that is ~5x smaller than W, so the e-loop σ'(v)⊙(F e) starts strongly contractive).
      for name, k in zip(fed_back, fb_keys):
        fb = jax.random.normal(k, p[name].shape)
        p[FEEDBACK_PREFIX + name] = fb / jnp.linalg.norm(fb)
    if cfg.linear_feedback:
      shape = (cfg.num_classes, cfg.state_size)
      if cfg.buffer_init is BufferInit.NORMAL:
        # Its own key (folded in), so the forward weights match the other methods' at a seed.
        k_q = jax.random.fold_in(key, 1)
        p[BUFFER] = jax.random.normal(k_q, shape) / jnp.sqrt(cfg.num_classes)
      else:
        p[BUFFER] = jnp.zeros(shape, jnp.float32)
    for name, value in p.items():
      setattr(self, name, nnx.Param(value))


def params_of(model: EquilibriumNet) -> Params:
  """The module's parameters as a plain dict (differentiable: reads the Param values)."""
  names = sorted(k for k, v in vars(model).items() if isinstance(v, nnx.Param))
  return {n: getattr(model, n)[...] for n in names}


def forward_params(p: Params) -> Params:
  """The parameters of f and dec (no feedback copies, no buffer)."""
  return {k: v for k, v in p.items() if not k.startswith(FEEDBACK_PREFIX) and k != BUFFER}


def init_params(cfg: ModelConfig, key: jax.Array) -> Params:
  return params_of(EquilibriumNet(cfg, key))


def implicit_map(p: Params, x: jax.Array, v: jax.Array, arch: Arch) -> jax.Array:
  """f(x, v): x (B, D), v (B, N) -> (B, N)."""
  if arch is Arch.CONV_FF:
    return conv.implicit_map(p, x, v)
  if arch is Arch.CONV_RNN:
    return conv_rnn.implicit_map(p, x, v)
  drive = x @ p["u"].T + p["b_in"]
  if arch.recurrent:
    return drive + jnp.tanh(v) @ recurrent_weight(p, arch).T + p["b"]
  h = p["w"].shape[0]
  return jnp.concatenate([drive, jnp.tanh(v[:, :h]) @ p["w"].T + p["b"]], axis=1)


def recurrent_weight(p: Params, arch: Arch) -> jax.Array:
  """W (H, H) as f uses it: symmetrised for rnn-sym."""
  return 0.5 * (p["w"] + p["w"].T) if arch is Arch.RNN_SYM else p["w"]


def hopfield_energy(p: Params, x: jax.Array, v: jax.Array, arch: Arch) -> jax.Array:
  """Hopfield energy of rnn-sym (sum over the batch), ρ = tanh(v):
      E(v) = Σ_i [v_i ρ_i − log cosh v_i] − ½ ρᵀ W_s ρ − (U x + b_in + b)ᵀ ρ,
  the first term being ∫₀^ρ_i ρ⁻¹. Then ∂E/∂v = ρ'(v) ⊙ (v − f(x, v)): its stationary points
  are the fixed points of f, and v̇ = f − v descends it (Hopfield 1984)."""
  if arch is not Arch.RNN_SYM:
    raise ValueError(f"arch {arch.value} has no energy (its interactions are not symmetric)")
  r = jnp.tanh(v)
  log_cosh = jnp.logaddexp(v, -v) - jnp.log(2.0)
  drive = x @ p["u"].T + p["b_in"] + p["b"]
  pair = jnp.sum((r @ recurrent_weight(p, arch)) * r)
  return jnp.sum(v * r - log_cosh) - 0.5 * pair - jnp.sum(drive * r)


def activation_slope(v: jax.Array, arch: Arch) -> jax.Array:
  """σ'(v) of the state's nonlinearity (tanh; ReLU for conv-ff), elementwise, (B, N)."""
  if arch is Arch.CONV_FF:
    return (v > 0).astype(v.dtype)
  return 1.0 - jnp.tanh(v) ** 2


def decoder(p: Params, v: jax.Array) -> jax.Array:
  """dec(v): (B, N) -> logits (B, C), read from the last hidden block."""
  if "lin2" in p:  # conv-ff: ReLU readout of the last linear block
    return conv.decoder(p, v)
  if "dec_bn_scale" in p:  # conv-rnn: BatchNorm, average pooling, linear
    return conv_rnn.decoder(p, v)
  h = p["d"].shape[1]
  return readout(p, jnp.tanh(v[:, -h:]))


def readout(p: Params, r: jax.Array) -> jax.Array:
  """The decoder as a function of the last block's activity r = tanh(v_last): (B, H) -> (B, C)."""
  return r @ p["d"].T + p["c"]


def zero_state(x: jax.Array, cfg: ModelConfig) -> jax.Array:
  return jnp.zeros((x.shape[0], cfg.state_size), x.dtype)


def free_equilibrium(p: Params, x: jax.Array, cfg: ModelConfig, solver: SolverConfig) -> Solution:
  """v° = f(x, v°) from v = 0 (not differentiable; see methods for gradients)."""
  return solve(lambda v: implicit_map(p, x, v, cfg.arch), zero_state(x, cfg), solver)


def free_equilibrium_from(
  p: Params, x: jax.Array, v0: jax.Array, cfg: ModelConfig, solver: SolverConfig
) -> Solution:
  """The free dynamics relaxed from v0 (B, N) instead of rest: which equilibrium it reaches
  tells whether the network is multi-stable at x."""
  return solve(lambda v: implicit_map(p, x, v, cfg.arch), v0, solver)


def unrolled_forward(p: Params, x: jax.Array, cfg: ModelConfig) -> jax.Array:
  """A feedforward network's forward pass as (blocks + 1) Picard steps from v = 0 (3 for ff,
  6 for conv-ff): exact, since step k fixes block k."""
  if cfg.arch.recurrent:
    raise ValueError("unrolled_forward is for the feedforward archs (ff, conv-ff)")
  v = zero_state(x, cfg)
  for _ in range(3 if cfg.arch is Arch.FF else len(conv.BLOCKS) + 1):
    v = implicit_map(p, x, v, cfg.arch)
  return v


def mean_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean over the batch (as the reference code): ∂L/∂y carries a 1/B factor."""
  logp = jax.nn.log_softmax(logits)
  return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return jnp.mean(jnp.argmax(logits, axis=1) == labels)
