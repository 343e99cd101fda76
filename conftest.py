"""Shared pytest setup for every test directory of the workspace."""

import pytest

from innerloop_core.testing import full_float32_matmuls


def pytest_collection_modifyitems(config, items):
  """The slow (end-to-end) tests first, in their collected order: with `-n auto --dist
  worksteal` the workers start the long runs early and share out the short tests after them,
  so that no minute-long test starts last with the other worker idle."""
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _full_precision():
  """Exactness tests compare float32 identities; keep GPUs from using TF32 matmuls."""
  with full_float32_matmuls():
    yield
