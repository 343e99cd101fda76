"""Text images rendered offline: the stand-in for the "text images" of meta-learned implicit
neural representations (INR), since no image set can be downloaded here.

Each image is one character drawn from `ALPHABET` with Pillow's built-in default font
(`ImageFont.load_default`, bundled with Pillow: nothing is fetched), at a random size and
offset, white on black, as an S×S float32 array in [0, 1]. Deterministic for a given seed and
Pillow version (font rasterisation can differ across Pillow releases).
"""

from __future__ import annotations

import string

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
