"""Teacher-student sequences: a random multi-head causal linear self-attention as teacher.

Shape notation: B batch, T time steps, D input = output width, H heads, K key size,
V value size. Weights use ``innerloop_core.attention``'s (in, out) layout.

The teacher maps x_1..x_T, x_t ~ N(0, I_D), to
    y_t = Σ_h P_h M_t,h q_t,h,   M_t,h = Σ_{s≤t} v_s,h k_s,hᵀ
(causal LSA without softmax, normalisation or residual), i.e.
``attention.linear_attention(x, ..., mask=CAUSAL)``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from innerloop_core.attention import Mask, linear_attention


class LSATeacher(NamedTuple):
  """Weights of a causal multi-head LSA teacher."""

  w_q: jax.Array  # [H, D, K]
  w_k: jax.Array  # [H, D, K]
  w_v: jax.Array  # [H, D, V]
  w_p: jax.Array  # [H, V, D]

  @property
  def dim(self) -> int:
    return self.w_q.shape[1]


class TeacherStudentBatch(NamedTuple):
  x: jax.Array  # [B, T, D] inputs
  y: jax.Array  # [B, T, D] teacher outputs


def _positive_int(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{name} must be an int >= 1; got {value!r}")
  return value


def random_lsa_teacher(
  key: jax.Array, dim: int, num_heads: int, key_size: int, value_size: int | None = None
) -> LSATeacher:
  """Entries of W_Q, W_K, W_V ~ N(0, 1/D); of P_h ~ N(0, 1/(H·V)).

  The variances keep every q, k, v entry at unit variance and the summed head outputs at
  the scale of one head's, whatever H.
  """
  d = _positive_int("dim", dim)
  h = _positive_int("num_heads", num_heads)
  k = _positive_int("key_size", key_size)
  v = _positive_int("value_size", k if value_size is None else value_size)
  kq, kk, kv, kp = jax.random.split(key, 4)
  return LSATeacher(
    w_q=jax.random.normal(kq, (h, d, k)) / jnp.sqrt(d),
    w_k=jax.random.normal(kk, (h, d, k)) / jnp.sqrt(d),
    w_v=jax.random.normal(kv, (h, d, v)) / jnp.sqrt(d),
    w_p=jax.random.normal(kp, (h, v, d)) / jnp.sqrt(h * v),
  )


def lsa_teacher_outputs(teacher: LSATeacher, x: jax.Array) -> jax.Array:
  """y [B, T, D] of the teacher for inputs x [B, T, D]."""
  return linear_attention(x, *teacher, mask=Mask.CAUSAL)


def teacher_student_batch(
  key: jax.Array, teacher: LSATeacher, batch_size: int, length: int
) -> TeacherStudentBatch:
  """B fresh sequences of T inputs x_t ~ N(0, I_D) and the teacher's outputs."""
  b = _positive_int("batch_size", batch_size)
  t = _positive_int("length", length)
  x = jax.random.normal(key, (b, t, teacher.dim), jnp.float32)
  return TeacherStudentBatch(x, lsa_teacher_outputs(teacher, x))
