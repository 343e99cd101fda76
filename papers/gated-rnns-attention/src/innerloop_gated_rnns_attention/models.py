"""The E7 LRU+GLU network, and the gated RNN whose trained λ can reach 0 and 1.

Shape notation: B batch, T time steps, D input width, H model width, N LRU units per
layer, O output width, L layers.

Why two blocks (sheet §4, our reading): the GLU of block 1 multiplies two linear maps of
its input (input gating), the LRU of block 2 accumulates the products (λ ≈ 1) or passes
them on (λ ≈ 0), and block 2's GLU multiplies what it reads (output gating): the gated
RNN's three ingredients, with the LayerNorm and GELU of the standard block in between.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from innerloop_core.lru import Dense, LRUBlock
from innerloop_core.recurrent import Decay, GatedLinearRNN


class LRUGLUNet(nnx.Module):
  """x [B, T, D] -> y [B, T, O] through L pre-norm LRU + GLU residual blocks."""

  def __init__(
    self, in_dim: int, width: int, hidden: int, out_dim: int, num_layers: int, *, key: jax.Array
  ):
    keys = jax.random.split(key, num_layers + 2)
    self.encoder = Dense(in_dim, width, key=keys[0])
    self.blocks = nnx.List([LRUBlock(width, hidden, key=k) for k in keys[1:-1]])
    self.decoder = Dense(width, out_dim, key=keys[-1])

  def states(self, x: jax.Array) -> dict[str, jax.Array]:
    """{"h<l>": [B, T, 2N]} the real and imaginary parts of every layer's LRU state."""
    u = self.encoder(x)
    out = {}
    for i, block in enumerate(self.blocks):
      normed = block.norm(u)
      h = block.lru.hidden_states(normed)
      out[f"h{i}"] = jnp.concatenate([h.real, h.imag], axis=-1)
      u = block.post(u, block.lru.readout(h, normed))
    return out

  def __call__(self, x: jax.Array) -> jax.Array:
    u = self.encoder(x)
    for block in self.blocks:
      u = block(u)
    return self.decoder(u)


def reachable_decay(nu: jax.Array, margin: float) -> jax.Array:
  """λ = clip((1 + 2ε) σ(ν) − ε, 0, 1), ε = margin: the sigmoid's shape, with 0 and 1 reached.

  σ(ν) alone only approaches 0 and 1, and the students it trains compensate for memories
  that leak (λ ≈ 0.995 forgets 7% over T = 16 steps) with neurons of intermediate λ. This map
  hits λ = 1 exactly at ν = log((1 + ε)/ε) and λ = 0 at its negative (`decay_bound`); in
  float32 the lower end rounds to λ ≈ 1.4e-9 for ε = 0.005 (a memory of 1e-9 per step).
  """
  return jnp.clip((1.0 + 2.0 * margin) * jax.nn.sigmoid(nu) - margin, 0.0, 1.0)


def decay_bound(margin: float) -> float:
  """The ν at which `reachable_decay` reaches 1 (and −ν: 0)."""
  return float(jnp.log((1.0 + margin) / margin))


class ReachableGatedRNN(GatedLinearRNN):
  """core's GatedLinearRNN with λ = `reachable_decay`(ν, margin); same init λ distribution.

  Train it with `project_decay(-decay_bound(margin), decay_bound(margin))` so that ν stays
  where λ is exactly 0 or 1 instead of drifting past it (where the clip has no gradient).
  """

  def __init__(self, *args, margin: float, **kwargs):
    if not 0.0 < margin < 0.5:
      raise ValueError(f"decay margin must be in (0, 0.5), got {margin}")
    super().__init__(*args, decay=Decay.SIGMOID, **kwargs)
    self.margin = margin
    # The parent drew λ0 and stored ν = logit(λ0); keep λ0 as the initial λ of this map.
    p = (jax.nn.sigmoid(self.nu[...]) + margin) / (1.0 + 2.0 * margin)
    self.nu = nnx.Param(jnp.log(p) - jnp.log1p(-p))

  def lam(self) -> jax.Array:
    return reachable_decay(self.nu[...], self.margin)


def project_decay(low: float, high: float, name: str = "nu") -> optax.GradientTransformation:
  """Projected steps for a bounded decay parameter: after the optimiser, ν is put back into
  [low, high]; every parameter not called `name` is left alone.

  For λ = clip(ν, 0, 1) ([low, high] = [0, 1]) or `reachable_decay` (±`decay_bound`). Without
  it a ν that steps past the bound has zero gradient through the clip and stays there for
  good (a probe with λ = clip(ν, 0, 1) froze 11 of 20 neurons at λ = 0 and 9 at λ = 1 within
  2000 steps, one memory neuron short of the construction). Projected, ν sits exactly on the
  bound, where ``jnp.clip`` passes half the gradient, so λ can leave 0 or 1 again.
  """

  def update(updates, state, params):
    if params is None:
      raise ValueError("project_decay needs the parameters (optax update(..., params))")

    def project(path, u, p):
      if any(getattr(k, "key", None) == name for k in path):
        return jnp.clip(p + u, low, high) - p
      return u

    return jax.tree_util.tree_map_with_path(project, updates, params), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
