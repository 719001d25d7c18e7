"""Subspace minimisation of L-BFGS-B (the direct primal method), batched.

From the generalized Cauchy point ``x^c`` the variables still free there (the
set ``F``, as a mask ``Z``) are moved to minimise the quadratic model with the
others held at ``x^c``. Byrd, Lu, Nocedal & Zhu (1995), section 5.1:

  reduced gradient   r^c = -Z^T (g + theta (x^c - x) - W M c),  c = W^T (x^c - x)
  reduced Hessian    B^ = theta I - Z^T W M W^T Z
  Newton step        d^u = B^{-1} r^c
                         = r^c / theta + Z^T W N^{-1} M W^T Z r^c / theta^2,
                     N = I - M W^T Z Z^T W / theta            (2m x 2m)

(Sherman-Morrison-Woodbury, the paper's eq. 5.11). Since ``N^{-1} M =
(K - W^T Z Z^T W / theta)^{-1}`` and that matrix is, like ``K``,
``[[-P, C^T], [C, A]]`` with ``P = D + Y^T Z Z^T Y / theta`` and the Schur
complement ``A + C P^{-1} C^T`` positive definite, it is inverted from those
two blocks as SciPy's ``formk`` does (`_compact.quasi_definite_inverse`).
The step is then brought
back into the box as in L-BFGS-B 3.0 (Morales & Nocedal, 2011): the free
variables are projected, ``x^ = P(x^c + d^u)``; if the projection changed
anything and ``g.(x^ - x) > 0`` (not a descent direction), the projected
point is discarded for the backtracked one ``x^c + alpha d^u`` with the
largest ``alpha <= 1`` that stays feasible (Byrd et al.'s original step).

All sets are masks over ``[B, n]``; fixed variables have zero rows in ``Z W``.
"""

import tensorflow as tf

from tf_extopt._solver._lbfgsb import _cauchy
from tf_extopt._solver._lbfgsb import _compact
from tf_extopt._solver._lbfgsb import _small

__all__ = ["compact_newton_step", "bring_inside"]


def compact_newton_step(x, g, compact, cauchy):
  """Returns `(d^u, ok)`: the unconstrained step from `x^c` over the free set.

  Through the compact form by Sherman-Morrison-Woodbury (module docstring);
  `_dense.explicit_newton_step` is the same step from an explicit ``B``.

  Args:
    x: `[B, n]` current point.
    g: `[B, n]` gradient at `x`.
    compact: `_compact.CompactForm`.
    cauchy: `_cauchy.CauchyPoint`.

  Returns:
    `(du [B, n], ok [B] bool)`; `du` is zero on fixed variables; `ok` is false
    where the reduced system was numerically singular.
  """
  theta, w, m = compact.theta, compact.w, compact.m
  free = cauchy.free
  xcp = cauchy.x
  freef = tf.cast(free, x.dtype)
  wm_c = _small.matvec(w, _small.matvec(m, cauchy.c))   # W M c
  r = -(g + theta[:, None] * (xcp - x) - wm_c) * freef
  wz = w * freef[..., None]                                  # Z Z^T W
  wz_r = _small.matvec(wz, r, transpose_a=True)           # W^T Z r
  # v = N^{-1} M W^T Z r = (K - W^T Z Z^T W / theta)^{-1} W^T Z r, and that
  # matrix has K's structure [[-P, C^T], [C, A]] (SciPy's `formk`).
  num_pairs = compact.d.shape[-1]
  y_free, s_free = wz[..., :num_pairs], wz[..., num_pairs:]  # Z Z^T Y, theta S
  s_held = w[..., num_pairs:] * (1.0 - freef)[..., None]
  over_theta = 1.0 / theta[:, None, None]
  p = (tf.linalg.diag(compact.d)
       + _small.matmul(y_free, y_free, transpose_a=True) * over_theta)
  c = compact.lower - _small.matmul(s_free, y_free,
                                       transpose_a=True) * over_theta
  unused = tf.linalg.diag(tf.cast(~compact.valid, x.dtype))
  a = (_small.matmul(s_held, s_held, transpose_a=True) * over_theta
       + unused)
  inverse, ok = _compact.quasi_definite_inverse(p, c, a)
  v = _small.matvec(inverse, wz_r)
  du = (r / theta[:, None]
        + _small.matvec(wz, v) / (theta * theta)[:, None])
  return du * freef, ok


def bring_inside(x, g, lower, upper, cauchy, du):
  """Projects `x^c + du` into the box, or backtracks if that spoils descent.

  Returns:
    `[B, n]` the point `x_bar`; the search direction is `x_bar - x`.
  """
  free = cauchy.free
  xcp = cauchy.x
  # Projection, then the backtracking fallback of L-BFGS-B 3.0.
  trial = xcp + du
  projected = tf.where(free, tf.clip_by_value(trial, lower, upper), xcp)
  touched = tf.reduce_any(
      free & ((projected <= lower) | (projected >= upper)), axis=-1)
  ascent = _cauchy.dot(projected - x, g) > 0
  inf = tf.constant(float("inf"), x.dtype)
  ratio = tf.where(du > 0, (upper - xcp) / tf.where(du > 0, du, 1.0),
                   tf.where(du < 0, (lower - xcp) / tf.where(du < 0, du, 1.0),
                            inf))
  ratio = tf.where(free, ratio, inf)
  alpha = tf.minimum(tf.reduce_min(ratio, axis=-1), 1.0)
  alpha = tf.maximum(alpha, 0.0)
  limiting = tf.one_hot(tf.argmin(ratio, axis=-1, output_type=tf.int32),
                        tf.shape(x)[-1], on_value=True, off_value=False)
  limiting = limiting & (alpha < 1.0)[:, None]
  backtracked = tf.where(limiting, tf.where(du > 0, upper, lower),
                         xcp + alpha[:, None] * du)
  backtracked = tf.clip_by_value(backtracked, lower, upper)
  x_bar = tf.where((touched & ascent)[:, None], backtracked, projected)
  return x_bar
