"""The convolutional feedforward network of Table 2 (`conv-ff`), written as an equilibrium.

Shape notation: B examples; images x (B, 3·32·32) flattened channel-major (as the CIFAR-10
reader returns them); the state v (B, 34 272) is the concatenation of five blocks
    v₁ 96×15×15,  v₂ 128×7×7,  v₃ 256×3×3,  v₄ 2048,  v₅ 2048
and f(x, v) = (enc(x), conv₁(relu v₁), conv₂(relu v₂), lin₁(relu v₃), lin₂(relu v₄)):
    enc   Conv 3→96 (k5, pad 2) + MaxPool(3, stride 2)        32×32 -> 15×15
    conv₁ Conv 96→128 (k5, stride 2, pad 1)                    15×15 -> 7×7
    conv₂ Conv 128→256 (k5, stride 2, pad 1)                   7×7 -> 3×3
    lin₁  Linear 2304→2048,  lin₂ Linear 2048→2048
    dec(v) = D relu(v₅) + c                                    -> 10 logits
A ReLU chain: it converges in 5 iterations from any v (each step fixes one more block).
Weights are (out, in, kh, kw) / (out, in), initialised like torch (U(±1/√fan_in)).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

BLOCKS = ((96, 15, 15), (128, 7, 7), (256, 3, 3), (2048,), (2048,))
STATE_SIZE = sum(math.prod(b) for b in BLOCKS)  # 34 272
IMAGE = (3, 32, 32)
# name -> weight shape; every weight has a bias "<name>_b" of shape (out,)
WEIGHTS = {
  "enc": (96, 3, 5, 5),
  "conv1": (128, 96, 5, 5),
  "conv2": (256, 128, 5, 5),
  "lin1": (2048, 2304),
  "lin2": (2048, 2048),
}


def init(key: jax.Array, num_classes: int = 10) -> dict[str, jax.Array]:
  shapes = {**WEIGHTS, "d": (num_classes, 2048)}
  keys = jax.random.split(key, 2 * len(shapes))
  p = {}
  for i, (name, shape) in enumerate(shapes.items()):
    fan_in = math.prod(shape[1:])
    bound = 1.0 / math.sqrt(fan_in)
    p[name] = jax.random.uniform(keys[2 * i], shape, jnp.float32, -bound, bound)
    bias = "c" if name == "d" else f"{name}_b"
    p[bias] = jax.random.uniform(keys[2 * i + 1], shape[:1], jnp.float32, -bound, bound)
  return p


def _conv(x: jax.Array, w: jax.Array, b: jax.Array, stride: int, pad: int) -> jax.Array:
  y = jax.lax.conv_general_dilated(
    x, w, (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=("NCHW", "OIHW", "NCHW")
  )
  return y + b[None, :, None, None]


def _split(v: jax.Array) -> list[jax.Array]:
  out, start = [], 0
  for shape in BLOCKS:
    size = math.prod(shape)
    out.append(v[:, start : start + size].reshape((v.shape[0], *shape)))
    start += size
  return out


def implicit_map(p: dict[str, jax.Array], x: jax.Array, v: jax.Array) -> jax.Array:
  """f(x, v): x (B, 3072), v (B, 34 272) -> (B, 34 272)."""
  batch = x.shape[0]
  img = x.reshape((batch, *IMAGE))
  enc = _conv(img, p["enc"], p["enc_b"], 1, 2)
  enc = jax.lax.reduce_window(enc, -jnp.inf, jax.lax.max, (1, 1, 3, 3), (1, 1, 2, 2), "VALID")
  v1, v2, v3, v4, _ = _split(v)
  relu = jax.nn.relu
  h2 = _conv(relu(v1), p["conv1"], p["conv1_b"], 2, 1)
  h3 = _conv(relu(v2), p["conv2"], p["conv2_b"], 2, 1)
  h4 = relu(v3).reshape(batch, -1) @ p["lin1"].T + p["lin1_b"]
  h5 = relu(v4) @ p["lin2"].T + p["lin2_b"]
  return jnp.concatenate([b.reshape(batch, -1) for b in (enc, h2, h3, h4, h5)], axis=1)


def decoder(p: dict[str, jax.Array], v: jax.Array) -> jax.Array:
  """dec(v) = D relu(v₅) + c: (B, 34 272) -> (B, C)."""
  return jax.nn.relu(v[:, -2048:]) @ p["d"].T + p["c"]
