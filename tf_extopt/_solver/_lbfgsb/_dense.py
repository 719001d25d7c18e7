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
decompositions are slow for large batches of tiny matrices (see
benchmarks/README.md, "Where a direction's time goes").
"""

import numpy as np
import tensorflow as tf

from tf_extopt._solver._lbfgsb import _cauchy
from tf_extopt._solver._lbfgsb import _compact
from tf_extopt._solver._lbfgsb import _small
from tf_extopt._solver import _memory

__all__ = ["bfgs_matrix", "cauchy_point", "explicit_newton_step"]


def _fused_matvec(matrix, vector):
  """`[B, n, n] x [B, n] -> [B, n]`, broadcast in every call mode.

  XLA fuses the broadcast into the surrounding elementwise pass, unlike a
  batched matmul; outside XLA it keeps float32 iterates equal to the other
  call modes' (see `_small.matvec`'s `fuse`).
  """
  return _small.matvec(matrix, vector, fuse=True)


def bfgs_matrix(memory):
  """Returns `(theta [B], B [B, n, n])`, the L-BFGS-B matrix of each member."""
  s, y, valid = _memory.chronological(memory)  # [B, m, n], oldest first.
  dtype = s.dtype
  n = s.shape[-1]
  theta = _compact.initial_scaling(s, y, memory.count)
  matrix = theta[:, None, None] * tf.eye(n, dtype=dtype)
  for i in range(s.shape[1]):
    s_i, y_i = s[:, i], y[:, i]
    bs = _fused_matvec(matrix, s_i)
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
  n = x.shape[-1]

  held, d, num_breaks, num_moving, order, sorted_breaks = _cauchy.breakpoints(
      x, g, lower, upper)
  at_bound = tf.where(d > 0, upper, lower)  # Where a fixed variable goes.
  f2_floor = eps * theta * _cauchy.dot(d, d)

  def minimiser(z, d):
    # f' and f'' recomputed from the step so far.
    bd = _fused_matvec(matrix, d)
    f1 = _cauchy.dot(g, d) + _cauchy.dot(z, bd)
    f2 = tf.maximum(_cauchy.dot(d, bd), f2_floor)
    return _cauchy.segment_minimiser(f1, f2)

  z = zero
  d_left = d  # d with the variables fixed so far zeroed.
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
    new_z = tf.where(fixed_now, at_bound - x, z + dt[:, None] * d_left)
    new_d = tf.where(fixed_now, zero, d_left)
    moving_left = num_moving > k + 1
    new_dtm = tf.where(moving_left, minimiser(new_z, new_d),
                       tf.zeros_like(dtm))
    z = tf.where(fix[:, None], new_z, z)
    d_left = tf.where(fix[:, None], new_d, d_left)
    tsum = tf.where(fix, tsum + dt, tsum)
    dtm = tf.where(fix, new_dtm, dtm)
    hit |= fixed_now
    done |= stop | (fix & (~moving_left | (k + 1 >= num_breaks)))
  xcp, free, _ = _cauchy.path_end(x, lower, upper, held, d, d_left, tsum,
                                  dtm, hit)
  return _cauchy.CauchyPoint(x=xcp, c=None, free=free)


def explicit_newton_step(x, g, matrix, cauchy):
  """`(d^u, ok)` over the free variables, by inverting `Z^T B Z` itself.

  The same step as `_subspace.compact_newton_step`, which reaches it through
  the compact form and Sherman-Morrison-Woodbury instead.
  """
  free = cauchy.free
  freef = tf.cast(free, x.dtype)
  r = -(g + _fused_matvec(matrix, cauchy.x - x)) * freef
  # Z^T B Z, with a unit diagonal on the fixed variables.
  reduced = (matrix * freef[:, :, None] * freef[:, None, :]
             + tf.linalg.diag(1.0 - freef))
  # Unrolled as before this path shared `spd_inverse`: one small inverse
  # per trip compiles quickly.
  inverse, ok = _compact.spd_inverse(reduced, unroll=True)
  return _fused_matvec(inverse, r) * freef, ok
