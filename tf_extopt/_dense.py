"""L-BFGS-B's Cauchy point and subspace step from an explicit n x n matrix.

For few variables (``n <= 2m``) the limited-memory matrix is no bigger than
the ``2m x 2m`` middle matrix of its compact representation, so it is cheaper
to form ``B`` itself. ``B`` is the same matrix (Byrd, Nocedal & Schnabel 1994,
theorem 2.2): the BFGS updates of the held pairs, oldest first, applied to
``theta I``::

  B <- B - (B s)(B s)^T / (s^T B s) + y y^T / (y^T s)

With ``B`` explicit the two steps of L-BFGS-B need no factorisation of a
``2m x 2m`` system:

* Generalized Cauchy point (as `_cauchy`): the breakpoints of
  ``P(x - t g)`` are visited in increasing order; on each segment
  ``f' = g.d + z^T B d`` and ``f'' = d^T B d`` are recomputed from the
  Cauchy step so far ``z = x(t) - x`` (``O(n^2)``, no incremental update).
* Subspace minimisation (as `_subspace`): the reduced system
  ``Z^T B Z du = -Z^T (g + B z)`` is solved by Gauss-Jordan elimination,
  which needs no pivoting because the matrix is positive definite.

Every loop here is over a static size (``m`` pairs, ``n`` pivots), unrolled
so that XLA fuses each step into one pass over the batch: XLA's CPU
decompositions cost milliseconds for a batch of 1000 tiny matrices.
"""

import numpy as np
import tensorflow as tf

from tf_extopt import _cauchy
from tf_extopt import _compact
from tf_extopt import _memory

__all__ = ["bfgs_matrix", "cauchy_point", "newton_step"]


def _matvec(matrix, vector):
  # A broadcast product and a sum: XLA fuses it, unlike a batched matmul.
  return tf.reduce_sum(matrix * vector[:, None, :], axis=-1)


def bfgs_matrix(memory):
  """Returns `(theta [B], B [B, n, n])`, the L-BFGS-B matrix of each member."""
  s, y, valid = _memory.chronological(memory)  # [B, m, n], oldest first.
  dtype = s.dtype
  n = s.shape[-1]
  theta = _compact.initial_scaling(s, y, memory.count)
  matrix = theta[:, None, None] * tf.eye(n, dtype=dtype)
  for i in range(s.shape[1]):
    s_i, y_i = s[:, i], y[:, i]
    bs = _matvec(matrix, s_i)
    sbs = _cauchy.dot(s_i, bs)
    ys = _cauchy.dot(y_i, s_i)
    use = valid[:, i] & (sbs > 0) & (ys > 0)
    one = tf.ones_like(sbs)
    update = (y_i[:, :, None] * y_i[:, None, :]
              / tf.where(use, ys, one)[:, None, None]
              - bs[:, :, None] * bs[:, None, :]
              / tf.where(use, sbs, one)[:, None, None])
    matrix = tf.where(use[:, None, None], matrix + update, matrix)
  return theta, matrix


def cauchy_point(x, g, lower, upper, theta, matrix):
  """The generalized Cauchy point from an explicit matrix; see `_cauchy`.

  Returns:
    `_cauchy.CauchyPoint` with `c=None`.
  """
  dtype = x.dtype
  eps = np.finfo(dtype.as_numpy_dtype).eps
  zero = tf.zeros_like(x)
  inf = tf.constant(np.inf, dtype)
  n = x.shape[-1]

  held, d, num_breaks, num_moving, order, sorted_breaks = _cauchy.breakpoints(
      x, g, lower, upper)
  at_bound = tf.where(d > 0, upper, lower)
  f2_floor = eps * theta * _cauchy.dot(d, d)

  def minimiser(z, d):
    bd = _matvec(matrix, d)
    f1 = _cauchy.dot(g, d) + _cauchy.dot(z, bd)
    f2 = tf.maximum(_cauchy.dot(d, bd), f2_floor)
    # -f'/f''; with no curvature a descent segment runs to its end, a flat
    # one stays put.
    return tf.where(f2 > 0, -f1 / tf.where(f2 > 0, f2, tf.ones_like(f2)),
                    tf.where(f1 < 0, inf, tf.zeros_like(f1)))

  z = zero
  tsum = tf.zeros(tf.shape(x)[:1], x.dtype)  # `x[:, 0]` fails when n = 0.
  dtm = minimiser(z, d)
  done = tf.equal(num_breaks, 0)
  hit = tf.zeros_like(x, dtype=tf.bool)
  # Unrolled: at most n breakpoints, and n is small on this path.
  for k in range(n):
    pick = tf.one_hot(order[:, k], n, on_value=True, off_value=False)
    live = ~done & (k < num_breaks)
    dt = sorted_breaks[:, k] - tsum
    stop = live & (dtm < dt)
    fix = live & ~stop
    fixed_now = pick & fix[:, None]
    new_z = tf.where(fixed_now, at_bound - x, z + dt[:, None] * d)
    new_d = tf.where(fixed_now, zero, d)
    moving_left = num_moving > k + 1
    new_dtm = tf.where(moving_left, minimiser(new_z, new_d),
                       tf.zeros_like(dtm))
    z = tf.where(fix[:, None], new_z, z)
    d = tf.where(fix[:, None], new_d, d)
    tsum = tf.where(fix, tsum + dt, tsum)
    dtm = tf.where(fix, new_dtm, dtm)
    hit |= fixed_now
    done |= stop | (fix & (~moving_left | (k + 1 >= num_breaks)))
  dtm = tf.maximum(dtm, tf.zeros_like(dtm))
  dtm = tf.where(tf.math.is_finite(dtm), dtm, tf.zeros_like(dtm))
  tsum = tsum + dtm
  xcp = tf.where(hit, at_bound, tf.clip_by_value(
      x + tsum[:, None] * d, lower, upper))
  return _cauchy.CauchyPoint(x=xcp, c=None, free=~held & ~hit)


def newton_step(x, g, matrix, cauchy):
  """Returns `(d^u, ok)` over the free variables; see `_subspace.newton_step`.
  """
  free = cauchy.free
  freef = tf.cast(free, x.dtype)
  r = -(g + _matvec(matrix, cauchy.x - x)) * freef
  # Z^T B Z, with a unit diagonal on the fixed variables.
  reduced = (matrix * freef[:, :, None] * freef[:, None, :]
             + tf.linalg.diag(1.0 - freef))
  # Unrolled as before this path shared `spd_inverse`: one small inverse
  # per trip compiles quickly.
  inverse, ok = _compact.spd_inverse(reduced, unroll=True)
  return _matvec(inverse, r) * freef, ok
