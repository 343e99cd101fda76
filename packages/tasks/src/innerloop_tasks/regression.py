"""In-context regression tasks: linear and sine regression, tokenisers, diagnostics.

Every generator is a pure function of a JAX PRNG key. Both new-style typed keys
(``jax.random.key(seed)``) and legacy raw ``uint32`` keys (``jax.random.PRNGKey(seed)``)
are accepted. All arrays are ``float32`` (also when ``jax_enable_x64`` is on).

Shape notation (used throughout this module):

* ``B``  -- batch of tasks (one regression problem per task)
* ``N``  -- context pairs per task (plus one query pair)
* ``Dx`` -- input dimension, ``Dy`` -- output dimension
* ``T``  -- tokens per sequence, ``D`` -- token width

Linear tasks follow y = W x with W ~ N(0, I) of shape ``[Dy, Dx]`` and noise-free
targets. Inputs come in two conventions (see :class:`InputConvention`): the authors'
code (and therefore the published figures) draws x ~ U(-0.5, 0.5); the paper's text
says x ~ U(-1, 1). Absolute losses differ by a factor of 4 between the two. The code
convention is the default.

Jitting: shapes and options are Python values, so mark them static, e.g.::

    gen = jax.jit(linear_regression_tasks,
                  static_argnames=("batch_size", "num_context", "input_dim",
                                   "output_dim", "convention", "distribution",
                                   "noisy_labels"))

``input_scale`` and ``target_scale`` may be traced (e.g. ``jax.vmap`` over an OOD
sweep of alpha); they are only range-checked when they are concrete numbers.

Randomness: each generator makes ONE flat uniform draw from its key and slices it into
fixed slots (normal, exponential and Laplace variates by inverse CDF); see
``_uniform_draws`` for why (XLA compile time). Because the slot layout does not depend
on the options, with one key switching ``noisy_labels``, the convention or the scales
leaves everything else unchanged: ``convention="paper"`` gives exactly twice the
``"code"`` inputs, ``input_scale=a`` multiplies the (uniform) inputs of the
``input_scale=1`` batch by ``a``, and ``target_scale=a`` multiplies W by ``a``.
"""

from __future__ import annotations

import enum
import functools
import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from innerloop_core.config import parse_enum

__all__ = [
  "InputConvention",
  "SineConvention",
  "InputDistribution",
  "RegressionBatch",
  "linear_regression_tasks",
  "fixed_task_pool",
  "sample_from_pool",
  "sine_regression_tasks",
  "constructed_tokens",
  "standard_tokens",
  "sinusoidal_positional_encoding",
  "xxt_eigenvalue_extremes",
]

_F32 = jnp.float32
_HIGHEST = jax.lax.Precision.HIGHEST


class InputConvention(enum.Enum):
  """Input range of linear tasks (before ``input_scale``).

  ``CODE``: x ~ U(-0.5, 0.5) per coordinate (authors' code; the published figures).
  ``PAPER``: x ~ U(-1, 1) per coordinate (paper text, section 3).
  """

  CODE = "code"
  PAPER = "paper"


class SineConvention(enum.Enum):
  """Amplitude/phase distribution of sine tasks y = a sin(x + rho).

  ``CODE``: a ~ U(0.1, 0.5) and rho drawn from the same uniform variate, so that
  rho = pi (a - 0.1) / 0.4 exactly (authors' code; matches Fig 4).
  ``PAPER``: a ~ U(0.1, 5) and rho ~ U(0, pi), independent (paper appendix A.7).
  """

  CODE = "code"
  PAPER = "paper"


class InputDistribution(enum.Enum):
  """Input distribution of linear tasks.

  ``UNIFORM``: i.i.d. uniform coordinates, range set by :class:`InputConvention`
  and ``input_scale``.
  ``MIXED`` (out-of-distribution inputs, Figs 2/6): each task picks one of standard
  normal, standard exponential or standard Laplace (probability 1/3 each); its
  whole sample matrix (the N context inputs stacked with the query input,
  ``[N+1, Dx]``) is divided by its Frobenius norm and multiplied by
  ``input_scale``. The input convention is ignored.
  """

  UNIFORM = "uniform"
  MIXED = "mixed"


class RegressionBatch(NamedTuple):
  """A batch of in-context regression tasks (a pytree).

  Attributes:
    x_context: ``[B, N, Dx]`` context inputs.
    y_context: ``[B, N, Dy]`` context targets.
    x_query: ``[B, Dx]`` query input.
    y_query: ``[B, Dy]`` query target (always noise-free).
    w: teacher parameters. Linear tasks: ``[B, Dy, Dx]`` with y = W x. Sine tasks:
      ``[B, 1, 2]`` holding ``[a, rho]`` (amplitude, phase) of y = a sin(x + rho).
  """

  x_context: jax.Array
  y_context: jax.Array
  x_query: jax.Array
  y_query: jax.Array
  w: jax.Array


# ----------------------------------------------------------------------------------
# Argument validation
# ----------------------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int) -> int:
  ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
  if not ok or value < minimum:
    kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    hint = ""
    if isinstance(value, jax.core.Tracer):
      hint = " (shape arguments must be static under jit: use static_argnames)"
    raise ValueError(f"{name} must be {kind}, got {value!r}{hint}")
  return int(value)


def _check_scale(name: str, value: Any) -> Any:
  """Positive finite scale; traced values pass through unchecked."""
  if isinstance(value, bool):
    raise ValueError(f"{name} must be a positive finite number, got {value!r}")
  if isinstance(value, numbers.Real) or (
    isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) == 0
  ):
    v = float(value)
    if not (math.isfinite(v) and v > 0):
      raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v
  if isinstance(value, jax.Array):
    if jnp.ndim(value) != 0:
      raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(value)}")
    if not isinstance(value, jax.core.Tracer):
      v = float(value)
      if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    return value
  raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _as_enum(enum_cls: type[enum.Enum], value: Any, name: str) -> Any:
  return parse_enum(value, enum_cls, name)


def _check_key(key: Any) -> None:
  dtype = getattr(key, "dtype", None)
  if dtype is None:
    raise TypeError(
      "key must be a JAX PRNG key (jax.random.key(seed) or "
      f"jax.random.PRNGKey(seed)), got {type(key).__name__}"
    )
  if jnp.issubdtype(dtype, jax.dtypes.prng_key):
    if jnp.ndim(key) != 0:
      raise ValueError(f"key must be a single PRNG key, got key array of shape {key.shape}")
    return
  if dtype != jnp.uint32 or jnp.ndim(key) != 1:
    raise TypeError(
      "key must be a JAX PRNG key (jax.random.key(seed) or "
      f"jax.random.PRNGKey(seed)), got array of dtype {dtype} and shape {jnp.shape(key)}"
    )


# ----------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------


def _uniform_draws(key, shapes: tuple[tuple[int, ...], ...]) -> list[jax.Array]:
  """Independent U[0, 1) float32 arrays of the given shapes from ONE PRNG call.

  Compile time: every ``jax.random`` call with a distinct shape compiles its own
  Threefry kernel (1-2 s of XLA CPU compile time each), and a multi-dimensional draw
  feeding a dot compiled ~10x slower than a flat draw reshaped (measured, JAX 0.10.2,
  CPU). So each generator draws one flat array and slices it. The slot layout of a
  generator is fixed, so switching options on or off never shifts the other draws.
  """
  sizes = [math.prod(shape) for shape in shapes]
  flat = jax.random.uniform(key, (sum(sizes),), _F32)
  out, start = [], 0
  for shape, size in zip(shapes, sizes):
    out.append(flat[start : start + size].reshape(shape))
    start += size
  return out


def _symmetric(u: jax.Array) -> jax.Array:
  """Maps U[0, 1) to U(-1, 1) (the endpoint -1 is nudged inwards)."""
  return jnp.maximum(2.0 * u - 1.0, jnp.nextafter(jnp.float32(-1.0), jnp.float32(0.0)))


def _std_normal(u: jax.Array) -> jax.Array:
  """Inverse-CDF standard normal from U[0, 1)."""
  return jnp.sqrt(jnp.float32(2.0)) * jax.scipy.special.erfinv(_symmetric(u))


def _std_exponential(u: jax.Array) -> jax.Array:
  """Inverse-CDF standard exponential from U[0, 1) (finite since u < 1)."""
  return -jnp.log1p(-u)


def _std_laplace(u: jax.Array) -> jax.Array:
  """Inverse-CDF standard Laplace from U[0, 1)."""
  v = _symmetric(u)
  return -jnp.sign(v) * jnp.log1p(-jnp.abs(v))


def _mixed_inputs(u: jax.Array, u_family: jax.Array, input_scale) -> jax.Array:
  """Per task: normal / exponential / Laplace (1/3 each), Frobenius norm = scale.

  ``u``: U[0, 1) of shape [B, N+1, Dx]; ``u_family``: U[0, 1) of shape [B].
  """
  family = jnp.minimum(jnp.floor(3.0 * u_family), 2.0)[:, None, None]
  samples = jnp.where(
    family == 0.0,
    _std_normal(u),
    jnp.where(family == 1.0, _std_exponential(u), _std_laplace(u)),
  )
  norm = jnp.sqrt(jnp.sum(samples * samples, axis=(-2, -1), keepdims=True))
  norm = jnp.maximum(norm, jnp.finfo(_F32).tiny)
  return samples / norm * jnp.asarray(input_scale, _F32)


def _apply(w: jax.Array, x: jax.Array) -> jax.Array:
  """y = W x for w [B, Dy, Dx] and x [B, ..., Dx], full float32 precision."""
  if x.ndim == 2:
    return jnp.einsum("bij,bj->bi", w, x, precision=_HIGHEST)
  return jnp.einsum("bij,bnj->bni", w, x, precision=_HIGHEST)


def linear_regression_tasks(
  key: jax.Array,
  batch_size: int,
  num_context: int = 10,
  input_dim: int = 10,
  output_dim: int = 1,
  *,
  convention: InputConvention | str = InputConvention.CODE,
  input_scale: float | jax.Array = 1.0,
  target_scale: float | jax.Array = 1.0,
  distribution: InputDistribution | str = InputDistribution.UNIFORM,
  noisy_labels: int = 0,
) -> RegressionBatch:
  """Samples ``batch_size`` noise-free linear regression tasks y = W x.

  Args:
    key: PRNG key (typed or legacy uint32).
    batch_size: B, number of tasks.
    num_context: N, context pairs per task (one extra query pair is drawn).
    input_dim: Dx.
    output_dim: Dy.
    convention: input range, ``"code"`` U(-0.5, 0.5) (default) or ``"paper"`` U(-1, 1).
    input_scale: OOD alpha for inputs. ``UNIFORM``: x ~ U(-alpha/2, alpha/2) under
      ``"code"``, U(-alpha, alpha) under ``"paper"`` (alpha is the full interval width
      relative to the base range). ``MIXED``: Frobenius norm of each task's
      ``[N+1, Dx]`` sample matrix.
    target_scale: OOD alpha for targets; W ~ alpha * N(0, I).
    distribution: ``"uniform"`` (default) or ``"mixed"`` (see :class:`InputDistribution`).
    noisy_labels: k; in every task exactly k context targets (at random positions)
      are replaced by N(0, I_Dy) draws (not scaled by ``target_scale``). The query
      target stays noise-free.

  Returns:
    :class:`RegressionBatch` with x_context ``[B, N, Dx]``, y_context ``[B, N, Dy]``,
    x_query ``[B, Dx]``, y_query ``[B, Dy]``, w ``[B, Dy, Dx]``.
  """
  _check_key(key)
  batch_size = _check_int("batch_size", batch_size, 1)
  num_context = _check_int("num_context", num_context, 1)
  input_dim = _check_int("input_dim", input_dim, 1)
  output_dim = _check_int("output_dim", output_dim, 1)
  convention = _as_enum(InputConvention, convention, "convention")
  distribution = _as_enum(InputDistribution, distribution, "distribution")
  input_scale = _check_scale("input_scale", input_scale)
  target_scale = _check_scale("target_scale", target_scale)
  noisy_labels = _check_int("noisy_labels", noisy_labels, 0)
  if noisy_labels > num_context:
    raise ValueError(f"noisy_labels must be <= num_context ({num_context}), got {noisy_labels}")

  # Only shapes and the distribution are compile-time constants; the convention's
  # range factor and k are passed as data (fewer recompilations).
  range_factor = 1.0 if convention is InputConvention.CODE else 2.0
  return _linear_impl(
    key,
    input_scale,
    target_scale,
    range_factor,
    noisy_labels,
    batch_size,
    num_context,
    input_dim,
    output_dim,
    distribution,
  )


@functools.partial(jax.jit, static_argnums=(5, 6, 7, 8, 9))
def _linear_impl(
  key,
  input_scale,
  target_scale,
  range_factor,
  noisy_labels,
  batch_size,
  num_context,
  input_dim,
  output_dim,
  distribution,
):
  b, n, dx, dy = batch_size, num_context, input_dim, output_dim
  u_w, u_x, u_family, u_pos, u_noise = _uniform_draws(
    key, ((b, dy, dx), (b, n + 1, dx), (b,), (b, n), (b, n, dy))
  )
  w = _std_normal(u_w) * jnp.asarray(target_scale, _F32)

  if distribution is InputDistribution.UNIFORM:
    # U(-1/2, 1/2) * alpha ("code") or * 2 alpha ("paper").
    x = (u_x - 0.5) * (jnp.asarray(range_factor, _F32) * jnp.asarray(input_scale, _F32))
  else:
    x = _mixed_inputs(u_x, u_family, input_scale)
  x_context, x_query = x[:, :n], x[:, n]

  y_context = _apply(w, x_context)
  y_query = _apply(w, x_query)

  # Random ranks 0..N-1 per task; the k lowest-ranked positions get N(0, 1) targets.
  ranks = jnp.argsort(jnp.argsort(u_pos, axis=-1), axis=-1)
  noisy = (ranks < noisy_labels)[..., None]
  y_context = jnp.where(noisy, _std_normal(u_noise), y_context)

  return RegressionBatch(x_context, y_context, x_query, y_query, w)


def fixed_task_pool(key: jax.Array, pool_size: int, **task_kwargs: Any) -> RegressionBatch:
  """A fixed training set of ``pool_size`` linear tasks (Fig 16).

  Equivalent to ``linear_regression_tasks(key, pool_size, **task_kwargs)``; each task
  stores its full data (context, query and W), so sampling from the pool repeats
  exactly the same sequences. Leading axis of every field: ``pool_size``.
  """
  pool_size = _check_int("pool_size", pool_size, 1)
  if "batch_size" in task_kwargs:
    raise TypeError("fixed_task_pool: pass the pool size as pool_size, not batch_size")
  return linear_regression_tasks(key, pool_size, **task_kwargs)


def sample_from_pool(key: jax.Array, pool: RegressionBatch, batch_size: int) -> RegressionBatch:
  """Draws ``batch_size`` tasks uniformly with replacement from ``pool``."""
  _check_key(key)
  batch_size = _check_int("batch_size", batch_size, 1)
  if not isinstance(pool, RegressionBatch):
    raise TypeError(f"pool must be a RegressionBatch, got {type(pool).__name__}")
  return _sample_impl(key, pool, batch_size)


@functools.partial(jax.jit, static_argnums=(2,))
def _sample_impl(key, pool, batch_size):
  pool_size = pool.x_context.shape[0]
  idx = jax.random.randint(key, (batch_size,), 0, pool_size)
  return jax.tree_util.tree_map(lambda a: jnp.take(a, idx, axis=0), pool)


def sine_regression_tasks(
  key: jax.Array,
  batch_size: int,
  num_context: int = 10,
  *,
  convention: SineConvention | str = SineConvention.CODE,
) -> RegressionBatch:
  """Samples sine regression tasks y = a sin(x + rho) with scalar x ~ U(-5, 5).

  ``"code"`` (default): one uniform variate u ~ U(0, 1) per task gives
  a = 0.1 + 0.4 u and rho = pi u (the code draws both from the same key), hence
  rho = pi (a - 0.1) / 0.4. ``"paper"``: a ~ U(0.1, 5), rho ~ U(0, pi) independent.

  Returns:
    :class:`RegressionBatch` with Dx = Dy = 1: x_context/y_context ``[B, N, 1]``,
    x_query/y_query ``[B, 1]``, and ``w`` of shape ``[B, 1, 2]`` holding
    ``[a, rho]`` (NOT a weight matrix).
  """
  _check_key(key)
  batch_size = _check_int("batch_size", batch_size, 1)
  num_context = _check_int("num_context", num_context, 1)
  convention = _as_enum(SineConvention, convention, "convention")

  return _sine_impl(key, batch_size, num_context, convention)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _sine_impl(key, batch_size, num_context, convention):
  u_x, u_a, u_rho = _uniform_draws(
    key, ((batch_size, num_context + 1, 1), (batch_size,), (batch_size,))
  )
  x = 10.0 * u_x - 5.0
  if convention is SineConvention.CODE:
    amplitude = 0.1 + 0.4 * u_a
    phase = jnp.pi * u_a
  else:
    amplitude = 0.1 + 4.9 * u_a
    phase = jnp.pi * u_rho
  y = amplitude[:, None, None] * jnp.sin(x + phase[:, None, None])
  w = jnp.stack([amplitude, phase], axis=-1)[:, None, :].astype(_F32)
  return RegressionBatch(
    x_context=x[:, :num_context],
    y_context=y[:, :num_context],
    x_query=x[:, num_context],
    y_query=y[:, num_context],
    w=w,
  )


# ----------------------------------------------------------------------------------
# Tokenisers
# ----------------------------------------------------------------------------------


def _check_batch(batch: Any) -> tuple[int, int, int, int]:
  if not isinstance(batch, RegressionBatch):
    raise TypeError(f"batch must be a RegressionBatch, got {type(batch).__name__}")
  if batch.x_context.ndim != 3 or batch.y_context.ndim != 3:
    raise ValueError(
      "batch.x_context and batch.y_context must be [B, N, Dx] and [B, N, Dy], got "
      f"{batch.x_context.shape} and {batch.y_context.shape}"
    )
  b, n, dx = batch.x_context.shape
  dy = batch.y_context.shape[-1]
  if batch.x_query.shape != (b, dx) or batch.y_query.shape != (b, dy):
    raise ValueError(
      f"batch.x_query/y_query must be [B, Dx]=({b}, {dx}) and [B, Dy]=({b}, {dy}), "
      f"got {batch.x_query.shape} and {batch.y_query.shape}"
    )
  return b, n, dx, dy


def constructed_tokens(batch: RegressionBatch) -> jax.Array:
  """Tokens ``[B, N+1, Dx+Dy]``: e_i = (x_i, y_i) for the context, then (x_q, 0) last.

  The query target is NOT included; its y-slot is zero.
  """
  b, _, dx, dy = _check_batch(batch)
  context = jnp.concatenate([batch.x_context, batch.y_context], axis=-1)
  query = jnp.concatenate([batch.x_query, jnp.zeros((b, dy), batch.x_query.dtype)], axis=-1)
  return jnp.concatenate([context, query[:, None, :]], axis=1).astype(_F32)


@functools.lru_cache(maxsize=64)
def _pe_numpy(num_positions: int, size: int) -> np.ndarray:
  pos = np.arange(num_positions, dtype=np.float64)[:, None]
  pair = np.arange(size, dtype=np.float64)[None, :] // 2
  angle = pos / np.power(10000.0, 2.0 * pair / size)
  pe = np.where(np.arange(size)[None, :] % 2 == 0, np.sin(angle), np.cos(angle))
  return pe.astype(np.float32)


def sinusoidal_positional_encoding(num_positions: int, size: int) -> jax.Array:
  """Standard Transformer sinusoidal positional encoding, ``[T, size]`` float32.

  For position p (0-based) and column c with pair index i = c // 2:
  PE[p, c] = sin(p / 10000^(2i/size)) for even c, cos(p / 10000^(2i/size)) for odd c.
  """
  num_positions = _check_int("num_positions", num_positions, 1)
  size = _check_int("size", size, 0)
  return jnp.asarray(_pe_numpy(num_positions, size))


def standard_tokens(batch: RegressionBatch, pe_size: int = 10) -> jax.Array:
  """Standard (one item per token) sequence for Fig 5, ``[B, 2N+1, max(Dx, Dy) + pe_size]``.

  Token order: x_1, y_1, x_2, y_2, ..., x_N, y_N, x_q (query last, no target token).
  The data part of a token has width ``Dd = max(Dx, Dy)``: an x-token holds x in its
  FIRST Dx slots (zero-padded after), a y-token holds y in its LAST Dy slots (zeros
  before), i.e. (0, ..., 0, y). A sinusoidal positional encoding of ``pe_size``
  columns (:func:`sinusoidal_positional_encoding`, positions 0..2N) is concatenated
  after the data part of every token (``pe_size=0``: none). With Dy <= Dx the width
  is Dx + pe_size.
  """
  b, n, dx, dy = _check_batch(batch)
  pe_size = _check_int("pe_size", pe_size, 0)
  width = max(dx, dy)
  x_tok = jnp.pad(batch.x_context, ((0, 0), (0, 0), (0, width - dx)))
  y_tok = jnp.pad(batch.y_context, ((0, 0), (0, 0), (width - dy, 0)))
  pairs = jnp.stack([x_tok, y_tok], axis=2).reshape(b, 2 * n, width)
  q_tok = jnp.pad(batch.x_query, ((0, 0), (0, width - dx)))[:, None, :]
  tokens = jnp.concatenate([pairs, q_tok], axis=1).astype(_F32)
  if pe_size == 0:
    return tokens
  pe = sinusoidal_positional_encoding(2 * n + 1, pe_size)
  pe = jnp.broadcast_to(pe[None], (b, 2 * n + 1, pe_size))
  return jnp.concatenate([tokens, pe], axis=-1)


# ----------------------------------------------------------------------------------
# Diagnostics
# ----------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _xxt_extremes(key, range_factor, num_tasks, num_context, input_dim):
  (u,) = _uniform_draws(key, ((num_tasks, num_context, input_dim),))
  x = (u - 0.5) * jnp.asarray(range_factor, _F32)
  xxt = jnp.einsum("bni,bnj->bij", x, x, precision=_HIGHEST)  # sum_i x_i x_i^T, no 1/N
  eig = jnp.linalg.eigvalsh(xxt)  # ascending, [num_tasks, Dx]
  return jnp.min(eig[:, 0]), jnp.max(eig[:, -1])


def xxt_eigenvalue_extremes(
  key: jax.Array,
  num_tasks: int,
  num_context: int,
  input_dim: int = 10,
  convention: InputConvention | str = InputConvention.CODE,
) -> tuple[float, float]:
  """Fig 13 extremes of the eigenvalues of XX^T = sum_{i<=N} x_i x_i^T (no 1/N).

  Draws ``num_tasks`` independent context sets of N uniform inputs (``input_scale``
  1, given convention) and returns ``(min over tasks of the per-task minimum
  eigenvalue, max over tasks of the per-task maximum eigenvalue)``, computed with
  float32 ``eigvalsh``. Note: for N <= Dx the minimum is at the float32 noise floor
  (about 1e-6 times the largest eigenvalue) and may even come out slightly negative.
  """
  _check_key(key)
  num_tasks = _check_int("num_tasks", num_tasks, 1)
  num_context = _check_int("num_context", num_context, 1)
  input_dim = _check_int("input_dim", input_dim, 1)
  convention = _as_enum(InputConvention, convention, "convention")
  range_factor = 1.0 if convention is InputConvention.CODE else 2.0
  lo, hi = _xxt_extremes(key, range_factor, num_tasks, num_context, input_dim)
  return float(lo), float(hi)
