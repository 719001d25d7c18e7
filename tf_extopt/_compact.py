"""The compact limited-memory representation of L-BFGS-B, built per member.

Byrd, Nocedal & Schnabel (1994) write the L-BFGS Hessian approximation held
by the last ``k <= m`` pairs as::

  B = theta I - W M W^T,       W = [Y, theta S]              (n x 2k)
  M = K^{-1},                  K = [[-D, L^T], [L, theta S^T S]]   (2k x 2k)

with ``S``, ``Y`` the pairs as columns (oldest first), ``D = diag(s_i.y_i)``,
``L_ij = s_i.y_j`` for ``i > j`` (strictly lower triangle of ``S^T Y``) and
``theta = y.y / s.y`` of the newest pair (1 with no pairs).

Members hold different numbers of pairs, but all shapes stay ``[B, n, 2m]``
and ``[B, 2m, 2m]``: unused slots have zero columns in ``W`` and a unit
diagonal entry in ``K``, so they contribute nothing to ``B``. ``M`` is formed
explicitly (it is at most 2m x 2m) by a QR solve, which does not raise on a
singular ``K``; members whose ``K`` is numerically singular are reported, so
the caller can drop their memory as SciPy does when its factorisation fails.
"""

import collections

import numpy as np
import tensorflow as tf

from tf_extopt import _memory

__all__ = ["CompactForm", "compact_form", "initial_scaling", "solve"]

CompactForm = collections.namedtuple(
    "CompactForm",
    [
        "theta",  # [B] scaling of the initial matrix, B0 = theta I.
        "w",      # [B, n, 2m] W = [Y, theta S], zero columns for unused slots.
        "m",      # [B, 2m, 2m] the middle matrix M.
        "ok",     # [B] bool, M is finite (K was numerically invertible).
    ])


def solve(matrix, rhs):
  """Batched `matrix^{-1} rhs` by QR; never raises.

  Args:
    matrix: `[B, k, k]`.
    rhs: `[B, k, r]`.

  Returns:
    `(solution [B, k, r], ok [B] bool)`; `ok` is false where the matrix is
    numerically singular (the solution is then not meaningful).
  """
  dtype = matrix.dtype
  eps = np.finfo(dtype.as_numpy_dtype).eps
  q, r = tf.linalg.qr(matrix)
  diagonal = tf.abs(tf.linalg.diag_part(r))
  size = tf.cast(tf.shape(matrix)[-1], dtype)
  ok = tf.reduce_min(diagonal, axis=-1) > (
      eps * size * tf.reduce_max(diagonal, axis=-1))
  # Make singular members' triangles harmless; their result is flagged.
  safe_r = tf.where(ok[:, None, None], r,
                    tf.eye(tf.shape(r)[-1], batch_shape=tf.shape(r)[:1],
                           dtype=dtype))
  solution = tf.linalg.triangular_solve(
      safe_r, tf.linalg.matmul(q, rhs, transpose_a=True), lower=False)
  ok = ok & tf.reduce_all(tf.math.is_finite(solution), axis=[-2, -1])
  return solution, ok


def initial_scaling(s, y, count):
  """`theta = y.y / s.y` of each member's newest pair, 1 with no pairs.

  Args:
    s, y: `[B, m, n]` pairs oldest first (`_memory.chronological`), so the
      newest pair is the last position when a member holds any.
    count: `[B]` number of pairs held.
  """
  s_new, y_new = s[:, -1], y[:, -1]
  theta = tf.math.divide_no_nan(tf.reduce_sum(y_new * y_new, axis=-1),
                                tf.reduce_sum(s_new * y_new, axis=-1))
  return tf.where(count > 0, theta, tf.ones_like(theta))


def compact_form(memory):
  """Returns the `CompactForm` of each member's memory."""
  s, y, valid = _memory.chronological(memory)  # [B, m, n], oldest first.
  dtype = s.dtype
  num_pairs = s.shape[1]
  theta = initial_scaling(s, y, memory.count)

  w = tf.concat([tf.transpose(y, [0, 2, 1]),
                 theta[:, None, None] * tf.transpose(s, [0, 2, 1])], axis=-1)
  sy = tf.linalg.matmul(s, y, transpose_b=True)  # [i, j] = s_i . y_j
  ss = tf.linalg.matmul(s, s, transpose_b=True)
  d = tf.linalg.diag_part(sy)
  lower = tf.linalg.band_part(sy, -1, 0) - tf.linalg.diag(d)
  unused = tf.linalg.diag(tf.cast(~valid, dtype))
  k = tf.concat([
      tf.concat([unused - tf.linalg.diag(d),
                 tf.linalg.matrix_transpose(lower)], axis=-1),
      tf.concat([lower, theta[:, None, None] * ss + unused], axis=-1),
  ], axis=-2)
  identity = tf.eye(2 * num_pairs, batch_shape=tf.shape(s)[:1], dtype=dtype)
  m, ok = solve(k, identity)
  return CompactForm(theta=theta, w=w, m=m, ok=ok)
