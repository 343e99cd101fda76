"""A dense linear RNN layer and its online approximations (baseline of Zucchet et al. 2023).

Shape notation: B batch, T steps, H d_model (input and output width), N hidden units.

    h_t = A h_{t−1} + B x_t,   h_0 = 0          (A ∈ ℝ^{N×N} dense, linear activation)
    y_t = C h_t + D ⊙ x_t

Gradient rules (`innerloop_core.lru.GradientRule`, same forward value for every rule):
  BPTT      exact.
  ONLINE    SnAp-1 (Menick et al. 2021): the influence of a parameter on h_t is carried only
            through the diagonal of the recurrent Jacobian,
              E^A_t[i,j] = A_ii E^A_{t−1}[i,j] + h_{t−1,j},  E^B_t[i,j] = A_ii E^B_{t−1}[i,j] + x_t,j
            written for autodiff as h_t = diag(A)⊙h_{t−1} + offdiag(A)·sg(h_{t−1}) + B·sg(x_t)
            + [sg(B)·x_t − sg(B·x_t)]: only the current-step error goes to the layer below.
            For the LRU (diagonal A) this is exact; for a dense A it is an approximation.
  ONE_STEP  ∂h_t/∂A = h_{t−1}, ∂h_t/∂B = x_t (immediate only).
  SPATIAL   ∂h_t/∂A = 0, ∂h_t/∂B = x_t.
The sequence runs as a lax.scan (a dense recurrence has no diagonal parallel form).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from innerloop_core.config import parse_enum
from innerloop_core.lru import GradientRule

sg = jax.lax.stop_gradient


class DenseRNN(nnx.Module):
  """x [..., T, H] -> y [..., T, H]; A truncated-normal(±2σ)/√N, B N(0, 1/H), C N(0, 1/N),
  D N(0, 1)."""

  def __init__(self, d_model: int, d_hidden: int, *, key: jax.Array):
    k_a, k_b, k_c, k_d = jax.random.split(key, 4)
    self.d_model, self.d_hidden = d_model, d_hidden
    a = jax.random.truncated_normal(k_a, -2.0, 2.0, (d_hidden, d_hidden)) / math.sqrt(d_hidden)
    self.A = nnx.Param(a)
    self.B = nnx.Param(jax.random.normal(k_b, (d_hidden, d_model)) / math.sqrt(d_model))
    self.C = nnx.Param(jax.random.normal(k_c, (d_model, d_hidden)) / math.sqrt(d_hidden))
    self.D = nnx.Param(jax.random.normal(k_d, (d_model,)))

  def hidden_states(self, x: jax.Array, *, rule: GradientRule | str = GradientRule.BPTT):
    """h [B, T, N] for x [B, T, H] with `rule`'s gradient."""
    rule = parse_enum(rule, GradientRule, "rule")
    a, b = self.A[...], self.B[...]
    xs = jnp.moveaxis(x, 1, 0)  # time first for lax.scan
    h0 = jnp.zeros((x.shape[0], self.d_hidden), x.dtype)
    if rule is GradientRule.BPTT:

      def step(h, x_t):
        h = h @ a.T + x_t @ b.T
        return h, h

      return jnp.moveaxis(jax.lax.scan(step, h0, xs)[1], 0, 1)
    if rule is GradientRule.ONLINE:
      diag = jnp.diagonal(a)
      off = a - jnp.diag(diag)

      def step(h, x_t):
        inst = x_t @ sg(b).T
        h = diag * h + sg(h) @ off.T + sg(x_t) @ b.T + (inst - sg(inst))
        return h, h

      return jnp.moveaxis(jax.lax.scan(step, h0, xs)[1], 0, 1)
    # ONE_STEP / SPATIAL: exact values, gradients from time t only.
    h = sg(self.hidden_states(x, rule=GradientRule.BPTT))
    drive = x @ b.T
    h = h + (drive - sg(drive))
    if rule is GradientRule.ONE_STEP:
      h_prev = jnp.pad(h, ((0, 0), (1, 0), (0, 0)))[:, :-1]
      step = sg(h_prev) @ a.T
      h = h + (step - sg(step))
    return h

  def __call__(self, x: jax.Array, *, rule: GradientRule | str = GradientRule.BPTT, **_):
    """y [..., T, H] for x [..., T, H]. Extra keywords (e.g. a scan `impl`) are ignored: the
    dense recurrence always runs as a lax.scan."""
    lead, (steps, width) = x.shape[:-2], x.shape[-2:]
    flat = x.reshape((-1, steps, width))
    h = self.hidden_states(flat, rule=rule)
    y = h @ self.C[...].T + self.D[...] * flat
    return y.reshape(lead + (steps, width))
