"""Shared pytest setup for every test directory of the workspace."""

import pytest

from innerloop_core.testing import full_float32_matmuls


@pytest.fixture(autouse=True)
def _full_precision():
  """Exactness tests compare float32 identities; keep GPUs from using TF32 matmuls."""
  with full_float32_matmuls():
    yield
