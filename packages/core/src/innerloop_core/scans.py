"""Diagonal linear recurrences h_t = a_t ⊙ h_{t-1} + b_t, three ways.

Shape notation (used in every docstring below):
    B  batch
    T  time steps (the scanned axis, always axis 1 of the inputs)
    ...  any trailing state axes (e.g. N state channels); the recurrence is elementwise in them
    C  chunk size (``ScanImpl.CHUNKED``)
    M  chunks, ceil(T / C)

The recurrence is the one inside linear RNNs / SSMs (LRU, S4D/S5, Mamba, Griffin's RG-LRU):
    h_t = a_t ⊙ h_{t-1} + b_t,   t = 1..T,   h_0 given (zeros by default).
``reverse=True`` runs it backwards in time: h_t = a_t ⊙ h_{t+1} + b_t, t = T..1, h_{T+1} = h0.

Pairs (a, b) compose associatively, "x then y" being (a_x, b_x) ∘ (a_y, b_y) =
(a_x a_y, a_y b_x + b_y), which is what lets the associative and chunked forms reorder the
work. All implementations are plain JAX (differentiable by autodiff) and agree with
``linear_scan_reference`` up to floating-point reassociation.

AUTO rule (``_auto_impl``): SEQUENTIAL on CPU, ASSOCIATIVE elsewhere. Measured with
``benchmarks/scan_throughput.py --quick`` (jax 0.10.2, 2-core CPU, ~5 GB/s copy bandwidth;
forward+backward, B=8, N=256, float32, ms/call):
    T        sequential   associative   chunked C=16 / 64 / 256
    256          4.6          2.8          4.0 / 5.4 / 3.5   (rerun, 7 reps: 2.1 vs 3.5)
    1024        11.0         44.0         61 / 81 / 71
    4096        86.5        193          222 / 250 / 265
    16384      391         1416         1001 / 1676 / 1731
    complex64, T=1024: 53 vs 106 vs 153.
The loop does the least arithmetic and memory traffic (one read of a, b, one write of h);
on a CPU each step's B·N-wide multiply-add is already vectorised, so the O(log T)-depth forms
buy no parallelism and pay for ~2x the work plus full-size temporaries that fall out of cache
(the associative form's time grows ~15x from T=256 to 1024). A repeat run at T = 128, 256,
512 had the loop ahead at all three (1.3 vs 2.9, 2.1 vs 3.5, 5.7 vs 8.9 ms), so the T=256
first-run lead of ASSOCIATIVE was noise. With this rule a second --quick run measured AUTO at
1.04-1.22x the best explicit implementation (all SEQUENTIAL) at every T, complex64 included
(ratios above 1 are run-to-run noise). On an accelerator AUTO picks ASSOCIATIVE, whose
log-depth keeps wide hardware busy where a T-step loop of small kernels would not. Measured
with ``--quick`` on one NVIDIA H200 (jax 0.11.2, 2026-11-26; copy bound 2103 GB/s; the lease
ended during T = 16384), ms/call:
    T        sequential   associative   chunked C=64   auto (associative)
    256         10.9          0.32          1.21          0.20
    1024        43.7          0.78          0.73          0.39
    4096       146.7          0.44          2.13          0.47
(auto and associative are one program: their gap is the 3-rep noise of that run).
"""

from __future__ import annotations

import enum

import jax
import jax.numpy as jnp
from jax import lax

from innerloop_core.config import parse_enum


class ScanImpl(enum.Enum):
  """How ``linear_scan`` evaluates the recurrence."""

  # lax.scan over time: T dependent steps, each touching B·N elements. Least work, least
  # memory, but one loop iteration per step.
  SEQUENTIAL = "sequential"
  # lax.associative_scan with the (a, b) operator: O(log T) depth, ~2x the work of the loop
  # and several full-size temporaries.
  ASSOCIATIVE = "associative"
  # Sequential across chunks of `chunk_size`, associative inside each chunk: T / C loop
  # steps over chunk summaries, the bulk of the work vectorised across all chunks.
  CHUNKED = "chunked"
  # Chosen per backend by `_auto_impl` (see the module docstring for the measurements).
  AUTO = "auto"


def _as_impl(value) -> ScanImpl:
  return parse_enum(value, ScanImpl, "impl")


def _auto_impl(backend: str, num_steps: int) -> ScanImpl:
  """The implementation AUTO resolves to on `backend` for a T = `num_steps` scan."""
  # T is an argument so that a length-dependent rule can be added without changing callers;
  # on CPU the loop won at every measured T (128 to 16384, see the module docstring).
  del num_steps
  if backend == "cpu":
    return ScanImpl.SEQUENTIAL
  return ScanImpl.ASSOCIATIVE


def _combine(x: tuple[jax.Array, jax.Array], y: tuple[jax.Array, jax.Array]):
  """(a_x, b_x) then (a_y, b_y): applying x and then y to h gives a_y (a_x h + b_x) + b_y."""
  a_x, b_x = x
  a_y, b_y = y
  return a_x * a_y, a_y * b_x + b_y


def _validate(a, b, h0, chunk_size) -> None:
  if a.shape != b.shape:
    raise ValueError(f"a and b must have the same shape [B, T, ...]; got {a.shape} and {b.shape}")
  if a.ndim < 2:
    raise ValueError(f"a and b must be at least 2-D [B, T, ...] (time on axis 1); got {a.shape}")
  if a.shape[1] < 1:
    raise ValueError(f"the time axis (axis 1) must be non-empty; got shape {a.shape}")
  if h0 is not None:
    want = (b.shape[0],) + b.shape[2:]
    if tuple(h0.shape) != want:
      raise ValueError(
        f"h0 must have shape [B, ...] = {want} for b of shape {b.shape}; got {h0.shape}"
      )
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
    raise ValueError(f"chunk_size must be an int >= 1; got {chunk_size!r}")


def _sequential(a, b, h0, reverse):
  """lax.scan over time. a, b: [B, T, ...]; h0: [B, ...] -> (h [B, T, ...], h_T [B, ...])."""

  def step(h, ab):
    a_t, b_t = ab
    h = a_t * h + b_t
    return h, h

  # lax.scan scans the leading axis, so time goes first for the loop and back afterwards.
  h_last, h = lax.scan(step, h0, (jnp.moveaxis(a, 1, 0), jnp.moveaxis(b, 1, 0)), reverse=reverse)
  return jnp.moveaxis(h, 0, 1), h_last


def _associative(a, b, h0, reverse):
  """lax.associative_scan over axis 1 with h0 folded into the first step (in scan order)."""
  # h_1 = a_1 h0 + b_1, so replacing b_1 by that value makes the scan start from zero.
  first = -1 if reverse else 0
  b = b.at[:, first].add(a[:, first] * h0)
  _, h = lax.associative_scan(_combine, (a, b), reverse=reverse, axis=1)
  return h, h[:, 0 if reverse else -1]  # the last step in scan order is the final state


def _chunked(a, b, h0, reverse, chunk_size):
  """Associative inside chunks of C steps, lax.scan across the M chunks' summaries."""
  batch, steps = b.shape[:2]
  state_shape = b.shape[2:]
  c = min(chunk_size, steps)  # a chunk longer than the sequence only adds padding
  m = -(-steps // c)
  pad = m * c - steps
  if pad:
    # Identity steps (a=1, b=0) leave the state unchanged, so they go after the sequence in
    # scan order: h_T is then still the final carry and the padded outputs are sliced off.
    widths = [(0, 0)] * b.ndim
    widths[1] = (pad, 0) if reverse else (0, pad)
    a = jnp.pad(a, widths, constant_values=1)
    b = jnp.pad(b, widths, constant_values=0)
  a = a.reshape((batch, m, c) + state_shape)
  b = b.reshape((batch, m, c) + state_shape)
  # Within each chunk, from a zero state: h = a_cum * h_in + b_cum, h_in the state entering it.
  a_cum, b_cum = lax.associative_scan(_combine, (a, b), reverse=reverse, axis=2)
  end = 0 if reverse else -1  # the chunk's last step in scan order summarises the whole chunk

  def step(h, ab):
    a_end, b_end = ab
    return a_end * h + b_end, h

  _, h_in = lax.scan(
    step,
    h0,
    (jnp.moveaxis(a_cum[:, :, end], 1, 0), jnp.moveaxis(b_cum[:, :, end], 1, 0)),
    reverse=reverse,
  )
  h_in = jnp.moveaxis(h_in, 0, 1)  # [B, M, ...]
  h = a_cum * jnp.expand_dims(h_in, 2) + b_cum
  h = h.reshape((batch, m * c) + state_shape)
  h = h[:, pad:] if reverse else h[:, :steps]
  # Read h_T off h rather than the loop's carry, which rounds differently (it is a_end·h +
  # b_end, not a_cum·h_in + b_cum): callers may rely on h_T being exactly h's last step.
  return h, h[:, 0 if reverse else -1]


def linear_scan(
  a: jax.Array,
  b: jax.Array,
  h0: jax.Array | None = None,
  *,
  impl: ScanImpl | str = ScanImpl.AUTO,
  reverse: bool = False,
  chunk_size: int = 64,
  acc_dtype=None,
) -> tuple[jax.Array, jax.Array]:
  """Run h_t = a_t ⊙ h_{t-1} + b_t along axis 1.

  Args:
    a: [B, T, ...] decays (real or complex).
    b: [B, T, ...] inputs, same shape as `a`.
    h0: [B, ...] initial state, or None for zeros.
    impl: a ScanImpl or its string value.
    reverse: run t = T..1, with h_{T+1} = h0.
    chunk_size: C for ``ScanImpl.CHUNKED`` (T need not be a multiple: the tail is padded).
    acc_dtype: dtype the recurrence is accumulated in (e.g. float32 for bfloat16 inputs);
      None uses the promoted dtype of the inputs.

  Returns:
    (h [B, T, ...], h_T [B, ...]); h_T is the final state (h_1 when `reverse`). Both are cast
    to the promoted dtype of (a, b, h0), which is b's dtype unless a or h0 promotes it (a
    complex `a` with a real `b` must give a complex h).
  """
  a = jnp.asarray(a)
  b = jnp.asarray(b)
  h0 = None if h0 is None else jnp.asarray(h0)
  impl = _as_impl(impl)
  _validate(a, b, h0, chunk_size)
  out_dtype = jnp.result_type(a, b) if h0 is None else jnp.result_type(a, b, h0)
  acc = out_dtype if acc_dtype is None else jnp.dtype(acc_dtype)
  a = a.astype(acc)
  b = b.astype(acc)
  h0 = jnp.zeros((b.shape[0],) + b.shape[2:], acc) if h0 is None else h0.astype(acc)
  if impl is ScanImpl.AUTO:
    impl = _auto_impl(jax.default_backend(), b.shape[1])
  if impl is ScanImpl.SEQUENTIAL:
    h, h_last = _sequential(a, b, h0, reverse)
  elif impl is ScanImpl.ASSOCIATIVE:
    h, h_last = _associative(a, b, h0, reverse)
  else:
    h, h_last = _chunked(a, b, h0, reverse, chunk_size)
  return h.astype(out_dtype), h_last.astype(out_dtype)


def linear_scan_reference(
  a: jax.Array, b: jax.Array, h0: jax.Array | None = None, *, reverse: bool = False
) -> tuple[jax.Array, jax.Array]:
  """The recurrence as a literal Python loop over t (for tests). Shapes as ``linear_scan``."""
  a = jnp.asarray(a)
  b = jnp.asarray(b)
  dtype = jnp.result_type(a, b) if h0 is None else jnp.result_type(a, b, h0)
  h = jnp.zeros((b.shape[0],) + b.shape[2:], dtype) if h0 is None else jnp.asarray(h0, dtype)
  # One split into steps rather than a[:, t] per t: eagerly, every distinct slice would be
  # compiled separately, which made this reference slower than the code it checks.
  a_steps, b_steps = jnp.unstack(a, axis=1), jnp.unstack(b, axis=1)
  order = range(b.shape[1] - 1, -1, -1) if reverse else range(b.shape[1])
  hs = [None] * b.shape[1]
  for t in order:
    h = a_steps[t] * h + b_steps[t]
    hs[t] = h
  return jnp.stack(hs, axis=1), h
