"""The copy task of Zucchet et al. (2023): remember a binary pattern, then write it back.

Shape notation: B sequences, T = 2·L + pad + 1 steps, K = bits per step, K + 1 input channels.

A sequence (L = pattern_length, P = pad):
  t = 0 .. L−1        inputs: the pattern, K Bernoulli(0.5) bits per step on channels 0..K−1
  t = L .. L+P−1      blank (the delay)
  t = L + P           the stop flag on channel K
  t = L+P+1 .. T−1    blank inputs; targets: the pattern again (the loss is only here)

Paper scale, as the published runs used it: L = 20, K = 7, P = 7 (the official code's
padding_length=5 is ignored by its own generator; the real delay is 7), so T = 48, the flag at
t = 27 and the targets at t = 28..47. The official draw is unseeded; this one is a pure
function of its key.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class CopySpec:
  pattern_length: int = 20
  num_bits: int = 7
  pad: int = 7

  @property
  def num_steps(self) -> int:
    return 2 * self.pattern_length + self.pad + 1

  @property
  def flag_step(self) -> int:
    return self.pattern_length + self.pad

  @property
  def input_channels(self) -> int:
    return self.num_bits + 1


def loss_mask(spec: CopySpec) -> jax.Array:
  """[T] bool: the steps that carry a target (t > flag step)."""
  return jnp.arange(spec.num_steps) > spec.flag_step


def copy_batch(key: jax.Array, batch: int, spec: CopySpec) -> tuple[jax.Array, jax.Array]:
  """(inputs [B, T, K+1] float32, targets [B, T, K] int32). Targets are 0 outside the mask."""
  pattern = jax.random.bernoulli(key, 0.5, (batch, spec.pattern_length, spec.num_bits))
  pattern = pattern.astype(jnp.int32)
  steps, length = spec.num_steps, spec.pattern_length
  inputs = jnp.zeros((batch, steps, spec.input_channels), jnp.float32)
  inputs = inputs.at[:, :length, : spec.num_bits].set(pattern.astype(jnp.float32))
  inputs = inputs.at[:, spec.flag_step, spec.num_bits].set(1.0)
  targets = jnp.zeros((batch, steps, spec.num_bits), jnp.int32)
  targets = targets.at[:, spec.flag_step + 1 :].set(pattern)
  return inputs, targets


def copy_splits(
  key: jax.Array, spec: CopySpec, sizes: tuple[int, int, int] = (20_000, 1_000, 1_000)
) -> dict[str, tuple[jax.Array, jax.Array]]:
  """train / val / test as contiguous slices of one seeded draw (no de-duplication, as the
  official code)."""
  inputs, targets = copy_batch(key, sum(sizes), spec)
  out, start = {}, 0
  for name, size in zip(("train", "val", "test"), sizes, strict=True):
    out[name] = (inputs[start : start + size], targets[start : start + size])
    start += size
  return out
