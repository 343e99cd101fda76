"""The convolutional equilibrium network of Table 2 (`conv-rnn`): a DEQ-style residual block.

Shape notation: B examples; S the image side (32 for CIFAR-10); images x (B, 3·S·S) flattened
channel-major (as the CIFAR-10 reader returns them); the state s (B, 48·S·S) is one 48-channel
feature map, flattened channel-major. With the encoding c = BN(Conv3×3 3→48 (x)):

    f(x, s) = GN₃(relu(c + GN₂(s + conv₂(GN₁(relu(conv₁(c)))))))
    dec(s)  = Linear(flatten(AvgPool 8×8 (BN(s))))                  -> C logits

conv₁ 48→64 and conv₂ 64→48 are 3×3, padding 1, without bias, initialised N(0, 0.01²); GN are
GroupNorm with 8 groups (affine, γ = 1, β = 0 at init); BN are BatchNorm (affine, γ = 1, β = 0).
As released (sheet §3, and the reference code's `ResNetImplicitModule(z=c, x=s)`): the block's
convolutions act on the encoding c, and the state enters only additively inside GN₂; the
textbook DEQ block convolves the state instead. BatchNorm always normalises with the batch's
own statistics (the reference never switches to eval mode, at test time included), so f and
dec couple the examples of a batch: evaluate in the training batch size to mirror it. Encoder
and readout weights are initialised like torch (U(±1/√fan_in)).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from innerloop_core.config import ConfigError

CHANNELS = 48  # the state's feature maps
INNER = 64  # conv₁'s output channels
GROUPS = 8  # GroupNorm groups
POOL = 8  # the readout's average-pooling window and stride
IMAGE_CHANNELS = 3
EPS = 1e-5  # torch's GroupNorm / BatchNorm default


def image_side(input_dim: int) -> int:
  """S from the flattened image width 3·S·S (a clear error for any other width)."""
  side = math.isqrt(input_dim // IMAGE_CHANNELS)
  if IMAGE_CHANNELS * side * side != input_dim or side % POOL:
    raise ConfigError(
      f"conv-rnn needs 3-channel square images whose side is a multiple of {POOL} "
      f"(table.dataset: cifar10, input_dim = 3·S·S = 3072); got input_dim={input_dim}"
    )
  return side


def state_size(input_dim: int) -> int:
  return CHANNELS * image_side(input_dim) ** 2


def _torch_uniform(key: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
  bound = 1.0 / math.sqrt(fan_in)
  return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def init(key: jax.Array, input_dim: int, num_classes: int = 10) -> dict[str, jax.Array]:
  side = image_side(input_dim)
  k = jax.random.split(key, 6)
  enc_fan_in = IMAGE_CHANNELS * 3 * 3
  readout = CHANNELS * (side // POOL) ** 2
  ones, zeros = jnp.ones((CHANNELS,)), jnp.zeros((CHANNELS,))
  return {
    "enc": _torch_uniform(k[0], (CHANNELS, IMAGE_CHANNELS, 3, 3), enc_fan_in),
    "enc_b": _torch_uniform(k[1], (CHANNELS,), enc_fan_in),
    "enc_bn_scale": ones,
    "enc_bn_bias": zeros,
    "conv1": 0.01 * jax.random.normal(k[2], (INNER, CHANNELS, 3, 3)),
    "conv2": 0.01 * jax.random.normal(k[3], (CHANNELS, INNER, 3, 3)),
    "gn1_scale": jnp.ones((INNER,)),
    "gn1_bias": jnp.zeros((INNER,)),
    "gn2_scale": ones,
    "gn2_bias": zeros,
    "gn3_scale": ones,
    "gn3_bias": zeros,
    "dec_bn_scale": ones,
    "dec_bn_bias": zeros,
    "d": _torch_uniform(k[4], (num_classes, readout), readout),
    "c": _torch_uniform(k[5], (num_classes,), readout),
  }


def conv3x3(x: jax.Array, w: jax.Array) -> jax.Array:
  """x (B, I, S, S), w (O, I, 3, 3) -> (B, O, S, S); stride 1, padding 1."""
  return jax.lax.conv_general_dilated(
    x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NCHW", "OIHW", "NCHW")
  )


def _affine(y: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
  return y * scale[None, :, None, None] + bias[None, :, None, None]


def group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, groups: int = GROUPS) -> jax.Array:
  """Per example and group of channels: x (B, C, S, S) -> same, zero mean and unit variance
  (biased) over the group's channels and pixels, then a per-channel affine map."""
  b, c, h, w = x.shape
  g = x.reshape(b, groups, c // groups, h, w)
  mean = g.mean(axis=(2, 3, 4), keepdims=True)
  var = g.var(axis=(2, 3, 4), keepdims=True)
  y = ((g - mean) / jnp.sqrt(var + EPS)).reshape(b, c, h, w)
  return _affine(y, scale, bias)


def batch_norm(x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
  """Training-mode BatchNorm: x (B, C, S, S) normalised per channel with the batch's mean and
  biased variance over examples and pixels, then a per-channel affine map."""
  mean = x.mean(axis=(0, 2, 3), keepdims=True)
  var = x.var(axis=(0, 2, 3), keepdims=True)
  return _affine((x - mean) / jnp.sqrt(var + EPS), scale, bias)


def _maps(x: jax.Array, v: jax.Array, input_dim: int) -> tuple[jax.Array, jax.Array]:
  side = image_side(input_dim)
  img = x.reshape((x.shape[0], IMAGE_CHANNELS, side, side))
  return img, v.reshape((v.shape[0], CHANNELS, side, side))


def encode(p: dict[str, jax.Array], img: jax.Array) -> jax.Array:
  """c = BN(Conv3×3(x) + b): (B, 3, S, S) -> (B, 48, S, S)."""
  c = conv3x3(img, p["enc"]) + p["enc_b"][None, :, None, None]
  return batch_norm(c, p["enc_bn_scale"], p["enc_bn_bias"])


def implicit_map(p: dict[str, jax.Array], x: jax.Array, v: jax.Array) -> jax.Array:
  """f(x, s): x (B, 3·S·S), v = s (B, 48·S·S) -> (B, 48·S·S)."""
  img, s = _maps(x, v, x.shape[1])
  c = encode(p, img)
  inner = group_norm(jax.nn.relu(conv3x3(c, p["conv1"])), p["gn1_scale"], p["gn1_bias"])
  mixed = group_norm(s + conv3x3(inner, p["conv2"]), p["gn2_scale"], p["gn2_bias"])
  out = group_norm(jax.nn.relu(c + mixed), p["gn3_scale"], p["gn3_bias"])
  return out.reshape(v.shape)


def decoder(p: dict[str, jax.Array], v: jax.Array) -> jax.Array:
  """dec(s) = D·flatten(AvgPool(BN(s))) + c: (B, 48·S·S) -> (B, C)."""
  side = math.isqrt(v.shape[1] // CHANNELS)
  s = batch_norm(v.reshape((v.shape[0], CHANNELS, side, side)), p["dec_bn_scale"], p["dec_bn_bias"])
  pooled = jax.lax.reduce_window(
    s, 0.0, jax.lax.add, (1, 1, POOL, POOL), (1, 1, POOL, POOL), "VALID"
  ) / (POOL * POOL)
  return pooled.reshape(v.shape[0], -1) @ p["d"].T + p["c"]
