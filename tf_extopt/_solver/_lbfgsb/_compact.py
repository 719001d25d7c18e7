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
explicitly (it is at most 2m x 2m) from the two symmetric positive definite
blocks of ``K`` (``D`` and ``T = theta S^T S + L D^{-1} L^T``, SciPy's
``formt``): ``D`` elementwise, ``T`` by `spd_inverse` (Gauss-Jordan
elimination under XLA, TF's Cholesky kernels elsewhere); no QR, which XLA
runs slowly on CPU. Members where a block is not numerically positive
definite are reported, so the caller can drop their memory as SciPy does
when its Cholesky factorisation fails.
"""

import collections

import numpy as np
import tensorflow as tf

from tf_extopt._solver import _context
from tf_extopt._solver import _memory
from tf_extopt._solver._lbfgsb import _small

__all__ = ["CompactForm", "compact_form", "initial_scaling", "spd_inverse",
           "quasi_definite_inverse"]

CompactForm = collections.namedtuple(
    "CompactForm",
    [
        "theta",  # [B] scaling of the initial matrix, B0 = theta I.
        "w",      # [B, n, 2m] W = [Y, theta S], zero columns for unused slots.
        "d",      # [B, m] the diagonal of D, 1 in unused slots.
        "lower",  # [B, m, m] L.
        "valid",  # [B, m] bool, which slots hold a pair.
        "m",      # [B, 2m, 2m] the middle matrix M.
        "ok",     # [B] bool, M is finite (K was numerically invertible).
    ])


def spd_inverse(matrix, unroll=False):
  """Batched inverse of symmetric positive definite `[B, k, k]`, static `k`.

  Under XLA: Gauss-Jordan elimination in place, without pivoting (positive
  definite matrices never need it): `k` steps, each one fused pass over the
  batch. Only elementwise ops and reductions, the same on CPU, GPU and TPU
  (XLA's CPU decompositions are slow for large batches of tiny matrices).
  A `tf.while_loop` unless `unroll`: unrolled, several `m x m` inverses in
  one trip make compilation slower.

  Elsewhere (eager, plain graphs), where every elementwise op is a kernel
  launch, TF's batched Cholesky factorisation and solve, several times
  faster there than the Gauss-Jordan steps launched op by op. The figures
  for both choices are in benchmarks/README.md, "Where a direction's time
  goes". A
  matrix that is not positive definite factorises to NaN there (TF's CPU
  kernel does not raise); the same pivot test flags it.

  Returns:
    `(inverse [B, k, k], ok [B] bool)`; `ok` is false where a pivot was not
    safely positive (the matrix is not numerically positive definite) or the
    result is not finite.
  """
  dtype = matrix.dtype
  k = matrix.shape[-1]
  eps = np.finfo(dtype.as_numpy_dtype).eps
  scale = tf.reduce_max(tf.abs(tf.linalg.diag_part(matrix)), axis=-1)
  if not _context.in_xla_context():
    return _cholesky_inverse(matrix, eps * k * scale)

  def step(p, matrix, ok):
    unit = tf.one_hot(p, k, dtype=dtype)
    pivot = tf.reduce_sum(tf.linalg.diag_part(matrix) * unit, axis=-1)
    ok &= pivot > eps * k * scale
    inverse_pivot = 1.0 / tf.where(ok, pivot, tf.ones_like(pivot))
    column = tf.reduce_sum(matrix * unit, axis=-1)            # a_ip
    column *= inverse_pivot[:, None]                           # a_ip / a_pp
    row = tf.reduce_sum(matrix * unit[:, None], axis=-2)       # a_pj
    # Off the pivot's row and column a_ij - a_ip a_pj / a_pp; the row is
    # divided by the pivot, the column divided and negated, and the pivot
    # replaced by its inverse.
    matrix = (matrix - column[:, :, None] * row[:, None, :]
              + unit[None, :, None] * (row * inverse_pivot[:, None])[:, None, :]
              - column[:, :, None] * unit[None, None, :]
              + (unit[:, None] * unit[None, :])[None]
              * inverse_pivot[:, None, None])
    return p + 1, matrix, ok

  ok = tf.ones_like(scale, dtype=tf.bool)
  if _context.in_xla_context() and not unroll:
    _, matrix, ok = tf.while_loop(lambda p, *_: p < k, step,
                                  (tf.constant(0), matrix, ok))
  else:
    for p in range(k):
      _, matrix, ok = step(p, matrix, ok)
  ok &= tf.reduce_all(tf.math.is_finite(matrix), axis=[-2, -1])
  return matrix, ok


def _cholesky_inverse(matrix, min_pivot):
  """`spd_inverse` by TF's Cholesky kernels; pivots `l_pp^2 > min_pivot`."""
  factor = tf.linalg.cholesky(matrix)
  pivots = tf.square(tf.linalg.diag_part(factor))
  ok = (tf.reduce_all(tf.math.is_finite(factor), axis=[-2, -1])
        & tf.reduce_all(pivots > min_pivot[:, None], axis=-1))
  identity = tf.eye(tf.shape(matrix)[-1], batch_shape=tf.shape(matrix)[:1],
                    dtype=matrix.dtype)
  # Failed members solve with the identity instead: no NaN or inf in the
  # result, which the caller discards by `ok`.
  inverse = tf.linalg.cholesky_solve(
      tf.where(ok[:, None, None], factor, identity), identity)
  return inverse, ok & tf.reduce_all(tf.math.is_finite(inverse), axis=[-2, -1])


def quasi_definite_inverse(p, c, a, diagonal_p=False):
  """Batched inverse of `K = [[-P, C^T], [C, A]]` by its two SPD blocks.

  `P` is symmetric positive definite and the Schur complement
  `T = A + C P^{-1} C^T` is too (with `A` positive semi-definite this holds
  whenever `K` is nonsingular): the structure of both L-BFGS-B middle
  matrices. Block elimination, as SciPy's `formt`/`formk` factorise them::

    K^{-1} = [[-P^{-1} + E^T T^{-1} E, (T^{-1} E)^T],
              [T^{-1} E,                T^{-1}     ]],   E = C P^{-1}

  with both inverses from `spd_inverse`, so no pivoting and no QR.

  Args:
    p, c, a: `[B, k, k]` each; with `diagonal_p`, `p` is the `[B, k]`
      diagonal of a diagonal `P` (the compact form's `D`), inverted
      elementwise.

  Returns:
    `(inverse [B, 2k, 2k], ok [B] bool)`; `ok` is false where `P` or `T` is
    not numerically positive definite (the memory should then be dropped,
    as SciPy does when its Cholesky factorisation fails).
  """
  if diagonal_p:
    eps = np.finfo(p.dtype.as_numpy_dtype).eps
    scale = tf.reduce_max(tf.abs(p), axis=-1, keepdims=True)
    p_ok = tf.reduce_all(p > eps * p.shape[-1] * scale, axis=-1)
    inverse_diagonal = 1.0 / tf.where(p_ok[:, None], p, tf.ones_like(p))
    p_inverse = tf.linalg.diag(inverse_diagonal)
    e = c * inverse_diagonal[:, None, :]
  else:
    p_inverse, p_ok = spd_inverse(p)
    e = _small.matmul(c, p_inverse)
  t = a + _small.matmul(e, c, transpose_b=True)
  t_inverse, t_ok = spd_inverse(0.5 * (t + tf.linalg.matrix_transpose(t)))
  lower_left = _small.matmul(t_inverse, e)                   # T^{-1} E
  upper_left = -p_inverse + _small.matmul(e, lower_left, transpose_a=True)
  inverse = tf.concat([
      tf.concat([upper_left, tf.linalg.matrix_transpose(lower_left)],
                axis=-1),
      tf.concat([lower_left, t_inverse], axis=-1)], axis=-2)
  return inverse, p_ok & t_ok


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
  theta = initial_scaling(s, y, memory.count)

  w = tf.concat([tf.transpose(y, [0, 2, 1]),
                 theta[:, None, None] * tf.transpose(s, [0, 2, 1])], axis=-1)
  sy = _small.matmul(s, y, transpose_b=True)  # [i, j] = s_i . y_j
  ss = _small.matmul(s, s, transpose_b=True)
  d = tf.linalg.diag_part(sy)
  lower = tf.linalg.band_part(sy, -1, 0) - tf.linalg.diag(d)
  unused = tf.linalg.diag(tf.cast(~valid, dtype))
  m, ok = quasi_definite_inverse(d + tf.cast(~valid, dtype), lower,
                                 theta[:, None, None] * ss + unused,
                                 diagonal_p=True)
  return CompactForm(theta=theta, w=w, d=d + tf.cast(~valid, dtype),
                     lower=lower, valid=valid, m=m, ok=ok)
