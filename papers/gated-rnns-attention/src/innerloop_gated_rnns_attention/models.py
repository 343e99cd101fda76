"""The E7 LRU+GLU network: stacked LRU residual blocks between a linear encoder and decoder.

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
from flax import nnx

from innerloop_core.lru import Dense, LRUBlock


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
