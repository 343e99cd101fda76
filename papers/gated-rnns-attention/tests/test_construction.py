"""Exact identities of sheet §8: constructions vs causal LSA and vs 1-step GD."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from innerloop_core.attention import Mask, causal_linear_attention_recurrent, linear_attention
from innerloop_core.recurrent import GatedRNNWeights, gated_rnn
from innerloop_core.scans import ScanImpl
from innerloop_gated_rnns_attention.construction import (
  Form,
  gd_to_gated_rnn,
  lsa_size,
  lsa_to_gated_rnn,
)
from innerloop_icl_gd import gd
from innerloop_tasks.regression import RegressionBatch, constructed_tokens
from innerloop_tasks.teacher_student import lsa_teacher_outputs, random_lsa_teacher

T = 32


def _teacher_and_inputs(seed, dim, heads, key_size, value_size, dtype=jnp.float32):
  teacher = random_lsa_teacher(jax.random.key(seed), dim, heads, key_size, value_size)
  teacher = jax.tree.map(lambda w: w.astype(dtype), teacher)
  x = jnp.asarray(np.random.default_rng(seed).normal(size=(4, T, dim)), dtype)
  return teacher, x


@pytest.mark.parametrize("form", list(Form))
@pytest.mark.parametrize("heads,key_size,value_size", [(1, 4, 4), (2, 4, 4), (2, 3, 5)])
def test_construction_equals_lsa_fp32(form, heads, key_size, value_size):
  teacher, x = _teacher_and_inputs(0, 4, heads, key_size, value_size)
  built = lsa_to_gated_rnn(*teacher, form=form)
  assert built.weights.lam.shape[0] == lsa_size(4, heads, key_size, value_size, form)[0]
  want = lsa_teacher_outputs(teacher, x)
  got = gated_rnn(x, built.weights)
  assert float(jnp.max(jnp.abs(got - want))) <= 1e-5 * max(1.0, float(jnp.max(jnp.abs(want))))


@pytest.mark.parametrize("form", list(Form))
def test_construction_equals_lsa_fp64(form):
  with jax.enable_x64(True):
    teacher, x = _teacher_and_inputs(1, 3, 2, 3, 3, jnp.float64)
    built = lsa_to_gated_rnn(*teacher, form=form)
    got = gated_rnn(x, built.weights, impl=ScanImpl.SEQUENTIAL)
    assert got.dtype == jnp.float64
    assert float(jnp.max(jnp.abs(got - lsa_teacher_outputs(teacher, x)))) <= 1e-10


def test_compressed_size_does_not_depend_on_heads():
  assert lsa_size(4, 1, 4, 4, Form.COMPRESSED) == lsa_size(4, 8, 4, 4, Form.COMPRESSED) == (14, 40)
  assert lsa_size(4, 2, 4, 4, Form.GENERIC) == (40, 32)


@pytest.mark.parametrize("impl", [ScanImpl.SEQUENTIAL, ScanImpl.ASSOCIATIVE, ScanImpl.CHUNKED])
def test_recurrent_lsa_equals_quadratic_form(impl):
  teacher, x = _teacher_and_inputs(2, 5, 3, 4, 2)
  want = linear_attention(x, *teacher, mask=Mask.CAUSAL)
  got = causal_linear_attention_recurrent(x, *teacher, impl=impl)
  assert float(jnp.max(jnp.abs(got - want))) <= 1e-5 * max(1.0, float(jnp.max(jnp.abs(want))))


def _icl_batch(seed, b=64, n=10, dx=5, dy=1):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(b, dy, dx)).astype(np.float32)
  x = rng.uniform(-0.5, 0.5, size=(b, n + 1, dx)).astype(np.float32)
  y = np.einsum("bij,bnj->bni", w, x)
  return RegressionBatch(*(jnp.asarray(a) for a in (x[:, :-1], y[:, :-1], x[:, -1], y[:, -1], w)))


@pytest.mark.parametrize("dy", [1, 2])
def test_gd_rnn_equals_gd_one_step(dy):
  batch = _icl_batch(3, dy=dy)
  eta = 1.7
  built = gd_to_gated_rnn(eta, 10, 5, dy)
  assert built.weights.lam.shape[0] == 5 * dy + 5
  got = gated_rnn(constructed_tokens(batch), built.weights)[:, -1]
  want = gd.gd_predict(batch, jnp.array([eta]))
  assert float(jnp.max(jnp.abs(got - want))) <= 1e-6


def test_gd_predictor_equals_lsa_with_gd_weights():
  """The icl-gd construction (Prop. 1) read through a causal mask: the query's own token adds
  y_q x_q = 0 to the sum, so causal LSA with GD weights is GD-1 as well."""
  batch = _icl_batch(4)
  eta, n, dx = 0.9, 10, 5
  w_q = jnp.eye(dx + 1)[None, :, :dx]  # q = x
  w_k = w_q  # k = x
  w_v = jnp.eye(dx + 1)[None, :, dx:]  # v = y
  w_p = (eta / n) * jnp.eye(dx + 1)[None, dx:, :]  # write (η/N) Σ y xᵀ x_q into the y-slot
  out = linear_attention(constructed_tokens(batch), w_q, w_k, w_v, w_p, mask=Mask.CAUSAL)
  want = gd.gd_predict(batch, jnp.array([eta]))
  assert float(jnp.max(jnp.abs(out[:, -1, dx:] - want))) <= 1e-6


def test_neuron_rescaling_invariance():
  teacher, x = _teacher_and_inputs(5, 4, 2, 4, 4)
  w = lsa_to_gated_rnn(*teacher, form=Form.COMPRESSED).weights
  c = jnp.asarray(np.random.default_rng(0).uniform(0.5, 2.0, size=w.lam.shape), jnp.float32)
  # h_i scales by c_i when its input gate does; dividing its two output rows' share undoes it.
  scaled = GatedRNNWeights(
    w.w_in_x * c, w.w_in_g, w.lam, w.w_out_x / c[:, None], w.w_out_g / c[:, None], w.w_read
  )
  # A row of w_out_x and of w_out_g may both read neuron i, so rescale each product's factors
  # consistently: the construction reads each neuron through one of the two only.
  assert bool(jnp.all((w.w_out_x != 0).any(1) != (w.w_out_g != 0).any(1)))
  diff = gated_rnn(x, scaled) - gated_rnn(x, w)
  assert float(jnp.max(jnp.abs(diff))) <= 1e-6 * max(1.0, float(jnp.max(jnp.abs(gated_rnn(x, w)))))
