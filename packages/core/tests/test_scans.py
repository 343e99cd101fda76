"""Tests for innerloop_core.scans against the naive per-step loop, values and gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from innerloop_core.scans import ScanImpl, linear_scan, linear_scan_reference

# T = 37 is prime, so CHUNKED with C = 8 needs a padded tail chunk (and C = 64 > T clamps).
B, T, N = 2, 37, 3
CHUNK = 8

# Compiling dominates these tests' time; XLA's backend optimisations halve it and change
# nothing that is checked here (values are compared with tolerances, not bit patterns).
_jit = functools.partial(
  jax.jit,
  compiler_options={"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True},
)


def _inputs(seed: int, dtype):
  """a with |a| spread over [0.01, 0.9999] (near-1 decays and near-0 ones), b and h0 ~ N(0, 1)."""
  rng = np.random.default_rng(seed)
  mag = np.concatenate(
    [1 - 10 ** rng.uniform(-4, -1, size=(B, T, 2)), rng.uniform(0.01, 0.1, size=(B, T, N - 2))],
    axis=-1,
  )
  if np.issubdtype(dtype, np.complexfloating):
    a = mag * np.exp(1j * rng.uniform(-np.pi, np.pi, size=mag.shape))
    b = rng.normal(size=(B, T, N)) + 1j * rng.normal(size=(B, T, N))
    h0 = rng.normal(size=(B, N)) + 1j * rng.normal(size=(B, N))
  else:
    a = mag * rng.choice([-1.0, 1.0], size=mag.shape)
    b = rng.normal(size=(B, T, N))
    h0 = rng.normal(size=(B, N))
  w = rng.normal(size=(B, T, N))  # loss weights: every output gets its own cotangent
  w_last = rng.normal(size=(B, N))
  return tuple(jnp.asarray(x, dtype) for x in (a, b, h0)) + (
    jnp.asarray(w, jnp.float32),
    jnp.asarray(w_last, jnp.float32),
  )


def _rel(x, y) -> float:
  """‖x - y‖ / ‖y‖, in numpy float64 (eager jnp ops would compile once per shape and dtype)."""
  x, y = np.asarray(x, np.complex128), np.asarray(y, np.complex128)
  return float(np.linalg.norm(x - y) / np.linalg.norm(y))


def _value_and_grads(fn, w, w_last, with_h0):
  """(h, h_T) and the loss gradients w.r.t. a, b (and h0 when given) in one function."""

  def loss(a, b, h0):
    h, h_last = fn(a, b, h0 if with_h0 else None)
    value = jnp.sum(w * jnp.abs(h) ** 2) + jnp.sum(w_last * jnp.abs(h_last) ** 2)
    return value, (h, h_last)

  argnums = (0, 1, 2) if with_h0 else (0, 1)
  return lambda a, b, h0: jax.grad(loss, argnums=argnums, has_aux=True)(a, b, h0)[::-1]


@functools.cache
def _reference(dtype, with_h0, reverse):
  """The naive loop's outputs and gradients, shared by the four impls (eager: no compile)."""
  a, b, h0, w, w_last = _inputs(0, dtype)
  fn = functools.partial(linear_scan_reference, reverse=reverse)
  return _value_and_grads(fn, w, w_last, with_h0)(a, b, h0)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.complex64])
@pytest.mark.parametrize("impl", list(ScanImpl))
def test_matches_naive_loop_values_and_gradients(impl, dtype, with_h0, reverse):
  a, b, h0, w, w_last = _inputs(0, dtype)
  fn = functools.partial(linear_scan, impl=impl, reverse=reverse, chunk_size=CHUNK)
  (h, h_last), grads = _jit(_value_and_grads(fn, w, w_last, with_h0))(a, b, h0)
  (h_ref, h_last_ref), grads_ref = _reference(dtype, with_h0, reverse)
  assert h.shape == (B, T, N) and h_last.shape == (B, N)
  assert h.dtype == dtype and h_last.dtype == dtype
  assert _rel(h, h_ref) <= 1e-6
  assert _rel(h_last, h_last_ref) <= 1e-6
  # The final state is h_T forward and h_1 in reverse.
  np.testing.assert_array_equal(h_last, h[:, 0 if reverse else -1])
  assert len(grads) == (3 if with_h0 else 2)
  for g, g_ref in zip(grads, grads_ref, strict=True):
    assert g.dtype == dtype
    assert _rel(g, g_ref) <= 1e-5


@pytest.mark.parametrize("chunk_size, reverse", [(1, False), (5, True), (37, False), (64, True)])
def test_chunked_any_chunk_size(chunk_size, reverse):
  # C = 1, a non-divisor, C = T and C > T (clamped to T) all give the loop's answer.
  a, b, h0, _, _ = _inputs(1, jnp.float32)
  fn = functools.partial(linear_scan, impl="chunked", chunk_size=chunk_size, reverse=reverse)
  h, h_last = _jit(fn)(a, b, h0)
  h_ref, h_last_ref = linear_scan_reference(a, b, h0, reverse=reverse)
  assert _rel(h, h_ref) <= 1e-6 and _rel(h_last, h_last_ref) <= 1e-6


def test_trailing_axes_and_short_sequences():
  # Any number of trailing state axes, and T = 1.
  rng = np.random.default_rng(2)
  for shape in [(2, 1, 3), (2, 9, 2, 3)]:
    a = jnp.asarray(rng.uniform(-1, 1, size=shape), jnp.float32)
    b = jnp.asarray(rng.normal(size=shape), jnp.float32)
    h_ref, _ = linear_scan_reference(a, b)
    for impl in [ScanImpl.SEQUENTIAL, ScanImpl.ASSOCIATIVE, ScanImpl.CHUNKED]:
      h, _ = _jit(functools.partial(linear_scan, impl=impl, chunk_size=4))(a, b)
      assert h.shape == shape
      assert _rel(h, h_ref) <= 1e-6, (impl, shape)


def test_reference_is_the_recurrence():
  # Pin the reference itself on a hand-computed case: h = (1, 1·0.5 + 2, 2.5·2 + 3).
  a = jnp.asarray([[0.0, 0.5, 2.0]])
  b = jnp.asarray([[1.0, 2.0, 3.0]])
  h, h_last = linear_scan_reference(a, b)
  np.testing.assert_allclose(h, [[1.0, 2.5, 8.0]])
  # Reverse from h0 = 1: h_3 = 2 + 3 = 5, h_2 = 2.5 + 2 = 4.5, h_1 = 0 + 1 = 1.
  h, h_last = linear_scan_reference(a, b, jnp.asarray([1.0]), reverse=True)
  np.testing.assert_allclose(h, [[1.0, 4.5, 5.0]])
  np.testing.assert_allclose(h_last, [1.0])


def test_acc_dtype_bfloat16_inputs():
  # bf16 in, f32 accumulation, bf16 out: closer to the f32 loop than accumulating in bf16.
  a, b, _, _, _ = _inputs(3, jnp.float32)
  a16, b16 = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
  h_ref, _ = linear_scan_reference(a16.astype(jnp.float32), b16.astype(jnp.float32))
  for impl in [ScanImpl.SEQUENTIAL, ScanImpl.ASSOCIATIVE, ScanImpl.CHUNKED]:
    fn = functools.partial(linear_scan, impl=impl, acc_dtype=jnp.float32, chunk_size=CHUNK)
    h, h_last = _jit(fn)(a16, b16)
    assert h.dtype == jnp.bfloat16 and h_last.dtype == jnp.bfloat16
    assert _rel(h.astype(jnp.float32), h_ref) <= 1e-2


def test_complex_decay_with_real_inputs_stays_complex():
  a, _, _, _, _ = _inputs(4, jnp.complex64)
  b = jnp.ones((B, T, N), jnp.float32)
  h, _ = _jit(functools.partial(linear_scan, impl="associative"))(a, b)
  h_ref, _ = linear_scan_reference(a, b)
  assert h.dtype == jnp.complex64 and _rel(h, h_ref) <= 1e-6


def test_bad_inputs():
  a = jnp.ones((2, 5, 3))
  with pytest.raises(ValueError, match="same shape"):
    linear_scan(a, jnp.ones((2, 5, 4)))
  with pytest.raises(ValueError, match="at least 2-D"):
    linear_scan(jnp.ones(5), jnp.ones(5))
  with pytest.raises(ValueError, match="non-empty"):
    linear_scan(jnp.ones((2, 0, 3)), jnp.ones((2, 0, 3)))
  with pytest.raises(ValueError, match=r"h0 must have shape \[B, \.\.\.\] = \(2, 3\)"):
    linear_scan(a, a, jnp.ones((2, 5, 3)))
  with pytest.raises(ValueError, match="'sequential', 'associative', 'chunked', 'auto'"):
    linear_scan(a, a, impl="parallel")
  for bad in [0, -1, 2.0, True]:
    with pytest.raises(ValueError, match="chunk_size"):
      linear_scan(a, a, impl="chunked", chunk_size=bad)
