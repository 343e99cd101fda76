"""The exact identities of the sheet (§8), with the sheet's tolerances, in float64."""

import jax
import jax.numpy as jnp
import pytest

from innerloop_least_control import identities as I
from innerloop_least_control.model import Arch


@pytest.fixture(autouse=True)
def _float64():
  with I.float64():
    yield


def test_rbp_gradient_equals_bptt_through_200_steps():
  assert I.rbp_vs_bptt() <= 1e-4


def test_bptt_with_too_few_steps_differs():
  """The identity is not vacuous: 3 unrolled steps of the rnn give another gradient."""
  assert I.rbp_vs_bptt(steps=3) > 1e-3


def test_bp_on_ff_equals_rbp():
  assert I.bp_vs_rbp_ff() <= 1e-5


@pytest.mark.parametrize("arch", [Arch.RNN, Arch.FF])
def test_di_equilibrium_identities(arch):
  res = I.di_equilibrium_residuals(arch=arch)
  for name in ("state", "output", "control", "integral"):
    assert res[name] <= 1e-5, (name, res)


def test_least_control_gradient_theorem_by_finite_differences():
  assert I.least_control_theorem() <= 1e-3


def test_weak_control_update_aligns_with_the_gradient():
  assert I.weak_control_cosine() >= 0.99
  # ... and strong control does not align perfectly (the check can fail).
  assert I.weak_control_cosine(k_i=1.0, alpha=0.01) < 0.999


def test_literal_weak_control_diverges():
  res = I.weak_control_literal()
  assert not res["converged"] and res["max_abs_u_i"] > 1e6


def test_picard_and_anderson_same_point_and_stop_metric():
  res = I.picard_vs_anderson()
  assert res["max_abs_diff"] <= 1e-5
  assert res["stop_metric_rel_err"] <= 1e-6


def test_local_update_equals_explicit_outer_products():
  assert I.local_update_vs_explicit() <= 1e-6


def test_float64_context_restores_the_flag():
  before = jax.config.jax_enable_x64
  with I.float64():
    assert jnp.ones(1).dtype == jnp.float64
  assert jax.config.jax_enable_x64 == before
