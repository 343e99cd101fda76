"""The sheet's exact identities for the online rule on the paper's network (O1-O3), the
streaming-trace reference against the stop-gradient formulation, and the copy-task encoder."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from innerloop_core.lru import GradientRule
from innerloop_core.testing import relative_error
from innerloop_online_lru.model import (
  Network,
  Readout,
  class_loss,
  class_step_loss,
  class_weights,
  copy_loss,
  copy_step_loss,
  stream_grads,
)
from innerloop_tasks.copy_task import CopySpec, copy_batch, loss_mask

SPEC = CopySpec(pattern_length=5, num_bits=7, pad=3)  # T = 14, the tiny profile's copy task
H, N, BATCH = 16, 8, 4


def _net(layers: int, seed: int = 0) -> Network:
  return Network(
    SPEC.input_channels,
    2 * SPEC.num_bits,
    d_model=H,
    d_hidden=N,
    num_layers=layers,
    r_min=0.5,
    r_max=0.99,
    key=jax.random.key(seed),
  )


def _copy_data(seed: int = 1):
  x, y = copy_batch(jax.random.key(seed), BATCH, SPEC)
  return x, y, loss_mask(SPEC)


def _assert_same_gradient(got: np.ndarray, want: np.ndarray, name: str) -> None:
  """rel ≤ 1e-5; a gradient that is exactly zero (e.g. D on the copy task, whose inputs are 0
  wherever the loss is not) must be (numerically) zero in both."""
  if np.all(want == 0):
    np.testing.assert_allclose(got, 0.0, atol=1e-9, err_msg=name)
  else:
    assert relative_error(got, want) <= 1e-5, name


def _flat(state) -> dict[str, np.ndarray]:
  return {"/".join(map(str, k)): np.asarray(v[...]) for k, v in nnx.to_flat_state(state)}


@functools.lru_cache(maxsize=None)
def _autodiff(layers: int, rule: GradientRule, dropout: float = 0.0):
  net = _net(layers)
  x, y, mask = _copy_data()
  graphdef, params = nnx.split(net)
  key = jax.random.key(7) if dropout else None

  def loss(p):
    logits = nnx.merge(graphdef, p)(x, rule=rule, dropout_key=key, dropout_rate=dropout)
    return copy_loss(logits, y, mask)

  return _flat(jax.jit(jax.grad(loss))(params))


def _stream(layers: int, rule: GradientRule, dropout: float = 0.0):
  net = _net(layers)
  x, y, mask = _copy_data()
  weights = mask.astype(jnp.float32) / jnp.sum(mask)
  step_loss = lambda logits_t, t: copy_step_loss(logits_t, y[:, t], weights[t])
  key = jax.random.key(7) if dropout else None
  _, g = jax.jit(
    lambda: stream_grads(net, x, step_loss, rule=rule, dropout_key=key, dropout_rate=dropout)
  )()
  return _flat(g)


def test_o1_single_layer_online_equals_bptt_for_layer_and_downstream():
  bptt = _autodiff(1, GradientRule.BPTT)
  online = _autodiff(1, GradientRule.ONLINE)
  upstream = ("encoder/", "blocks/0/norm/")
  checked = [name for name in bptt if not name.startswith(upstream)]
  assert len(checked) == 14  # 8 LRU tensors, GLU 2 x (kernel, bias), decoder (kernel, bias)
  for name in checked:
    _assert_same_gradient(online[name], bptt[name], name)
  # upstream parameters get only instantaneous credit, which on the copy task is nothing
  np.testing.assert_array_equal(online["encoder/kernel"], 0.0)
  assert np.abs(bptt["encoder/kernel"]).max() > 0


@pytest.mark.parametrize("layers", [1, 2, 4])
def test_o2_streaming_traces_equal_stop_gradient_formulation(layers):
  sg_form = _autodiff(layers, GradientRule.ONLINE)
  stream = _stream(layers, GradientRule.ONLINE)
  for name, want in sg_form.items():
    _assert_same_gradient(stream[name], want, name)


@pytest.mark.parametrize("rule", [GradientRule.ONE_STEP, GradientRule.SPATIAL])
def test_truncated_rules_streamed_with_dropout(rule):
  sg_form = _autodiff(2, rule, 0.3)
  stream = _stream(2, rule, 0.3)
  for name, want in sg_form.items():
    _assert_same_gradient(stream[name], want, name)


def test_o3_spatial_lambda_gradients_exactly_zero():
  g = _autodiff(2, GradientRule.SPATIAL)
  for layer in range(2):
    np.testing.assert_array_equal(g[f"blocks/{layer}/lru/nu_log"], 0.0)
    np.testing.assert_array_equal(g[f"blocks/{layer}/lru/theta_log"], 0.0)


def test_stream_pool_st_classification_matches():
  """pool_st readout and a loss at every valid step (variable lengths), streamed."""
  net = Network(3, 5, d_model=H, d_hidden=N, num_layers=2, key=jax.random.key(3))
  x = jax.random.normal(jax.random.key(4), (BATCH, 10, 3))
  labels = jnp.array([0, 4, 2, 1])
  lengths = jnp.array([10, 7, 3, 9])
  graphdef, params = nnx.split(net)

  def loss(p):
    logits = nnx.merge(graphdef, p)(x, rule=GradientRule.ONLINE, readout=Readout.POOL_ST)
    return class_loss(logits, labels, lengths)

  value, want = jax.value_and_grad(loss)(params)
  weights = class_weights(lengths, 10)
  got_value, got = stream_grads(
    net, x, lambda lg, t: class_step_loss(lg, labels, weights[t]), readout=Readout.POOL_ST
  )
  np.testing.assert_allclose(float(got_value), float(value), rtol=1e-5)
  want, got = _flat(want), _flat(got)
  for name in want:
    _assert_same_gradient(got[name], want[name], name)


def test_stream_forward_matches_parallel_forward():
  net = Network(3, 5, d_model=H, d_hidden=N, num_layers=2, key=jax.random.key(3))
  x = jax.random.normal(jax.random.key(4), (BATCH, 10, 3))
  from innerloop_online_lru.model import stream_forward

  for readout in Readout:
    want = net(x, readout=readout)[:, -1]
    got = stream_forward(net, x, readout=readout)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_alignment_without_the_encoder_equals_a_naive_cosine():
  from innerloop_online_lru.model import alignment, flat_vector

  g = nnx.state(_net(2, seed=4), nnx.Param)
  g_ref = nnx.state(_net(2, seed=5), nnx.Param)

  # Naive: the cosine over every leaf whose path does not start at the encoder.
  def kept(state):
    leaves = jax.tree_util.tree_leaves_with_path(state)
    return np.concatenate(
      [np.ravel(v) for p, v in leaves if not jax.tree_util.keystr(p).startswith("['encoder']")]
    )

  a, b = kept(g), kept(g_ref)
  cos, ratio = alignment(g, g_ref, exclude=("encoder",))
  np.testing.assert_allclose(cos, a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), rtol=1e-5)
  np.testing.assert_allclose(ratio, np.linalg.norm(a) / np.linalg.norm(b), rtol=1e-5)
  encoder_size = sum(np.size(v) for v in jax.tree.leaves(g["encoder"]))
  assert flat_vector(g).size - flat_vector(g, ("encoder",)).size == encoder_size > 0
