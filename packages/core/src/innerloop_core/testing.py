"""Helpers for exactness tests shared by every paper's test suite."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp


def relative_error(got: jax.Array, want: jax.Array) -> float:
  """‖got − want‖ / ‖want‖ over all entries (Frobenius norms)."""
  return float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want))


@contextlib.contextmanager
def full_float32_matmuls() -> Iterator[None]:
  """GPUs may run float32 matmuls in TF32; exact identities need real float32."""
  with jax.default_matmul_precision("float32"):
    yield
