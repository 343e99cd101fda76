"""Glyphs rendered offline, the stand-ins for image sets that cannot be downloaded here.

* `text_images`: characters of Pillow's built-in default font, the stand-in for the "text
  images" of meta-learned implicit neural representations (INR). Each image is one character
  drawn from `ALPHABET` with `ImageFont.load_default` (bundled with Pillow: nothing is
  fetched), at a random size and offset, white on black, as an S×S float32 array in [0, 1].
* `stroke_alphabet` / `render_glyphs` / `sample_episodes`: procedural pen-stroke characters
  and N-way 1-shot episodes over them, the stand-in for Omniglot.

Deterministic for a given seed and Pillow version (rasterisation can differ across Pillow
releases).
"""

from __future__ import annotations

import functools
import string

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw, ImageFont

ALPHABET = string.ascii_letters + string.digits


def text_images(seed: int, count: int, side: int = 16) -> np.ndarray:
  """(count, side, side) float32 in [0, 1]: random characters, font size 0.6–0.9·side,
  placed so the glyph's box stays inside the image."""
  if count < 0 or side < 8:
    raise ValueError(f"text_images needs count >= 0 and side >= 8, got {count}, {side}")
  rng = np.random.default_rng(seed)
  fonts = {}
  out = np.zeros((count, side, side), np.float32)
  for i in range(count):
    char = ALPHABET[rng.integers(len(ALPHABET))]
    size = int(rng.integers(int(0.6 * side), int(0.9 * side) + 1))
    if size not in fonts:
      fonts[size] = ImageFont.load_default(size=size)
    font = fonts[size]
    left, top, right, bottom = font.getbbox(char)
    width, height = right - left, bottom - top
    x = rng.integers(0, max(side - width, 0) + 1) - left
    y = rng.integers(0, max(side - height, 0) + 1) - top
    img = Image.new("L", (side, side), 0)
    ImageDraw.Draw(img).text((int(x), int(y)), char, fill=255, font=font)
    out[i] = np.asarray(img, np.float32) / 255.0
  return out


# Procedural stroke glyphs: the offline stand-in for Omniglot (few-shot classification), since
# no character set can be downloaded here. A class is a fixed set of pen strokes in the unit
# square; an instance is that class drawn again with its control points jittered and a random
# affine map applied (the stand-in for a new drawer), rendered anti-aliased by supersampling.

GLYPH_SUPERSAMPLE = 4  # rendered at 4x the side, then box-filtered down: smooth strokes


def stroke_alphabet(seed: int, count: int, strokes: tuple[int, int] = (2, 4)) -> list:
  """`count` glyph classes, each a list of strokes; a stroke is a (P, 2) float64 array of
  control points in [0.15, 0.85]²: P = 2 (a straight segment) or 3 (a quadratic Bézier
  through its middle point's pull). `strokes` bounds the strokes per class (inclusive)."""
  if count < 0 or not 1 <= strokes[0] <= strokes[1]:
    raise ValueError(
      f"stroke_alphabet needs count >= 0 and 1 <= strokes[0] <= strokes[1], got {count}, {strokes}"
    )
  rng = np.random.default_rng(seed)
  classes = []
  for _ in range(count):
    n = int(rng.integers(strokes[0], strokes[1] + 1))
    classes.append([rng.uniform(0.15, 0.85, (int(rng.integers(2, 4)), 2)) for _ in range(n)])
  return classes


def _stroke_path(points: np.ndarray, samples: int = 16) -> np.ndarray:
  """(samples, 2) points along a segment (P = 2) or a quadratic Bézier (P = 3)."""
  t = np.linspace(0.0, 1.0, samples)[:, None]
  if len(points) == 2:
    return (1 - t) * points[0] + t * points[1]
  return (1 - t) ** 2 * points[0] + 2 * (1 - t) * t * points[1] + t**2 * points[2]


def _instance_affine(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """A random (2, 2) matrix and (2,) shift about the centre: rotation ±15°, scale 0.85–1.1
  per axis, shear ±0.15, shift ±0.06 of the side."""
  angle = np.deg2rad(rng.uniform(-15.0, 15.0))
  rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  shear = np.array([[1.0, rng.uniform(-0.15, 0.15)], [0.0, 1.0]])
  scale = np.diag(rng.uniform(0.85, 1.1, 2))
  return rot @ shear @ scale, rng.uniform(-0.06, 0.06, 2)


def render_glyphs(
  alphabet: list, instances: int, side: int = 16, seed: int = 0, jitter: float = 0.03
) -> np.ndarray:
  """(classes, instances, side, side) float32 in [0, 1]: every class of `alphabet` drawn
  `instances` times, each with control points moved by N(0, jitter²), its own affine map and
  a pen width of 0.06–0.09 of the side. Deterministic for a given seed and Pillow version."""
  if instances < 0 or side < 8 or jitter < 0:
    raise ValueError(
      f"render_glyphs needs instances >= 0, side >= 8, jitter >= 0, got {instances}, {side}, {jitter}"
    )
  rng = np.random.default_rng(seed)
  big = side * GLYPH_SUPERSAMPLE
  out = np.zeros((len(alphabet), instances, side, side), np.float32)
  for c, strokes in enumerate(alphabet):
    for i in range(instances):
      matrix, shift = _instance_affine(rng)
      width = max(1, int(round(rng.uniform(0.06, 0.09) * big)))
      img = Image.new("L", (big, big), 0)
      draw = ImageDraw.Draw(img)
      for points in strokes:
        moved = points + rng.normal(0.0, jitter, points.shape)
        path = (_stroke_path(moved) - 0.5) @ matrix.T + 0.5 + shift
        draw.line([tuple(p) for p in path * big], fill=255, width=width, joint="curve")
      small = img.resize((side, side), Image.Resampling.BOX)
      out[c, i] = np.asarray(small, np.float32) / 255.0
  return out


@functools.partial(jax.jit, static_argnames=("tasks", "ways", "queries"))
def sample_episodes(
  key: jax.Array, drawings: jax.Array, tasks: int, ways: int, queries: int
) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
  """`tasks` ways-way 1-shot episodes from drawings (C, I, D) (C classes, I drawings each,
  D pixels): per task, `ways` distinct classes and, per class, 1 + queries distinct drawings.
  The j-th class drawn gets label j, so labels carry no class identity across tasks.

  Returns ((support x (T, ways, D), labels (T, ways)),
           (query x (T, queries·ways, D), labels (T, queries·ways))), queries class-major
  within each query drawing index (query q of class j at position q·ways + j)."""
  classes, per_class = drawings.shape[0], drawings.shape[1]
  if ways > classes or 1 + queries > per_class:
    raise ValueError(
      f"sample_episodes: ways ({ways}) <= classes ({classes}) and 1 + queries ({queries}) <= "
      f"drawings per class ({per_class}) needed"
    )
  k_cls, k_draw = jax.random.split(key)
  cls = jax.vmap(lambda k: jax.random.choice(k, classes, (ways,), replace=False))(
    jax.random.split(k_cls, tasks)
  )
  pick = jax.vmap(
    jax.vmap(lambda k: jax.random.choice(k, per_class, (1 + queries,), replace=False))
  )
  draw = pick(jax.random.split(k_draw, (tasks, ways)))  # (T, ways, 1 + queries)
  x = drawings[cls[..., None], draw]  # (T, ways, 1 + queries, D)
  labels = jnp.broadcast_to(jnp.arange(ways), (tasks, ways))
  query_x = jnp.swapaxes(x[:, :, 1:], 1, 2).reshape(tasks, queries * ways, -1)
  return (x[:, :, 0], labels), (query_x, jnp.tile(labels, (1, queries)))
