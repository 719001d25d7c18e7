"""The generalized Cauchy point of L-BFGS-B, batched with fixed shapes.

Algorithm CP of Byrd, Lu, Nocedal & Zhu (1995), section 4, as SciPy's
``cauchy`` routine runs it. Along the projected steepest-descent path
``x(t) = P(x - t g, l, u)`` the quadratic model
``m(x) = g.(x - x_k) + 1/2 (x - x_k)^T B (x - x_k)`` with the compact
``B = theta I - W M W^T`` is piecewise quadratic in ``t``; the path bends at
the breakpoints ``t_i`` where variable ``i`` reaches its bound. The breakpoints
are visited in increasing order: on each segment, with ``f' = dm/dt`` and
``f'' = d2m/dt2`` at its start, the model's minimiser is ``dt* = -f'/f''``;
if it lies before the next breakpoint the search stops there, otherwise the
variable of that breakpoint is fixed at its bound and ``f'``, ``f''``,
``p = W^T d`` and ``c = W^T (x(t) - x)`` are updated in O(m) (the paper's
eqs. 4.9-4.11)::

  f'  += dt f'' + d_b^2 - theta d_b z_b + d_b w_b^T M c
  f'' += -theta d_b^2 + 2 d_b w_b^T M p - d_b^2 w_b^T M w_b
  p   -= d_b w_b

where ``d_b = -g_b``, ``z_b`` = the bound minus ``x_b``, ``w_b`` = row ``b``
of ``W``. As in SciPy, ``f''`` is kept at least ``eps * theta * ||d||^2``.

Batching: a bounded `tf.while_loop` visits the k-th smallest breakpoint of
all members at once, each member masked off when its search has stopped, so
the loop runs at most ``n`` times and stops as soon as every member is done.
Each trip finds its members' next breakpoint by a minimum over the ones not
yet passed instead of sorting them all first: searches usually stop after a
few breakpoints, and XLA's CPU sort of a large batch alone costs more than
the whole search. Row ``b`` of ``W`` is a batched gather, not a one-hot
reduction over ``[B, n, 2m]``, which costs more. Both are measured in
benchmarks/README.md, "Where a direction's time goes". Sets are boolean
masks.
"""

import collections

import numpy as np
import tensorflow as tf

from tf_extopt._solver._lbfgsb import _small

__all__ = ["CauchyPoint", "path_breakpoints", "breakpoints",
           "generalized_cauchy_point", "dot", "segment_minimiser", "path_end"]

CauchyPoint = collections.namedtuple(
    "CauchyPoint",
    [
        "x",     # [B, n] the generalized Cauchy point x^c.
        "c",     # [B, 2m] W^T (x^c - x).
        "free",  # [B, n] bool, variables not at a bound at x^c (the set F).
    ])


def dot(a, b):
  """Dot products over the last axis: `[..., n] x [..., n] -> [...]`."""
  return tf.reduce_sum(a * b, axis=-1)


def path_breakpoints(x, g, lower, upper):
  """The projected steepest-descent path's breakpoints, unsorted.

  Returns:
    `(held, d, num_breaks, num_moving, breaks)`: `held` [B, n] bool, the
    variables held at a bound from the start (fixed, or at a bound with the
    gradient pushing outwards or zero: SciPy's iwhere 1, 2, 3); `d = -g`
    with held variables zeroed; the number of finite breakpoints and of
    moving variables per member; each variable's breakpoint (+inf for none).
  """
  inf = tf.constant(np.inf, x.dtype)
  held = (tf.equal(lower, upper) | ((x <= lower) & (g >= 0))
          | ((x >= upper) & (g <= 0)))
  d = tf.where(held, tf.zeros_like(g), -g)
  breaks = tf.where(
      d < 0, (x - lower) / -d, tf.where(d > 0, (upper - x) / d, inf))
  breaks = tf.where(tf.math.is_finite(breaks), breaks, inf)
  num_breaks = tf.reduce_sum(tf.cast(breaks < inf, tf.int32), axis=-1)
  num_moving = tf.reduce_sum(tf.cast(tf.not_equal(d, 0), tf.int32), axis=-1)
  return held, d, num_breaks, num_moving, breaks


def breakpoints(x, g, lower, upper):
  """`path_breakpoints`, with the variables sorted in breakpoint order.

  Returns:
    `(held, d, num_breaks, num_moving, order, sorted_breaks)`: as
    `path_breakpoints`, with the variables in breakpoint order (ties by
    index) and the sorted breakpoints in place of the breakpoints.
  """
  held, d, num_breaks, num_moving, breaks = path_breakpoints(
      x, g, lower, upper)
  order = tf.argsort(breaks, axis=-1, stable=True)
  # The same values as tf.sort, without sorting twice: XLA's CPU sort costs
  # far more than the gather (benchmarks/README.md, "Where a direction's
  # time goes").
  sorted_breaks = tf.gather(breaks, order, batch_dims=1)
  return held, d, num_breaks, num_moving, order, sorted_breaks


def segment_minimiser(f1, f2):
  """``dt* = -f'/f''`` on a segment, per member.

  A segment without curvature (``f'' <= 0``) and a descent slope runs to its
  end (``+inf``, cut by the next breakpoint); a flat one (``d = 0``) stays.
  """
  positive = f2 > 0
  return tf.where(positive, -f1 / tf.where(positive, f2, tf.ones_like(f2)),
                  tf.where(f1 < 0, tf.constant(np.inf, f1.dtype),
                           tf.zeros_like(f1)))


def path_end(x, lower, upper, held, d, d_left, tsum, dtm, hit):
  """Where the search along the path stopped: the Cauchy point and free set.

  Args:
    x, lower, upper: `[B, n]` the current point and bounds.
    held: `[B, n]` bool, variables held at a bound from the start.
    d: `[B, n]` the initial direction `-g` (held variables zeroed).
    d_left: `[B, n]` `d` with the variables fixed on the way zeroed.
    tsum: `[B]` the breakpoint reached last.
    dtm: `[B]` the step from there to the model's minimiser (may be
      negative by roundoff or `+inf` on an unbounded last segment).
    hit: `[B, n]` bool, variables fixed at a bound on the way.

  Returns:
    `(x^c [B, n], free [B, n] bool, dtm [B])`, `dtm` as taken.
  """
  dtm = tf.maximum(dtm, tf.zeros_like(dtm))
  # A segment that is unbounded below only happens with no breakpoint left
  # and no curvature; stay at its start rather than go to infinity.
  dtm = tf.where(tf.math.is_finite(dtm), dtm, tf.zeros_like(dtm))
  at_bound = tf.where(d > 0, upper, lower)
  # Roundoff must not carry a variable that has not reached its breakpoint
  # past its bound.
  xcp = tf.where(hit, at_bound, tf.clip_by_value(
      x + (tsum + dtm)[:, None] * d_left, lower, upper))
  return xcp, ~held & ~hit, dtm


def generalized_cauchy_point(x, g, lower, upper, compact):
  """Computes the generalized Cauchy point of every member.

  Args:
    x: `[B, n]` current point, inside `[lower, upper]`.
    g: `[B, n]` gradient at `x`.
    lower, upper: `[B, n]` bounds (`-inf`/`+inf` where absent).
    compact: `_compact.CompactForm` of the members' memory.

  Returns:
    `CauchyPoint`.
  """
  dtype = x.dtype
  eps = np.finfo(dtype.as_numpy_dtype).eps
  zero = tf.zeros_like(x)
  theta, w, m = compact.theta, compact.w, compact.m
  n = tf.shape(x)[-1]

  held, d, num_breaks, num_moving, breaks = path_breakpoints(
      x, g, lower, upper)
  # Infinite bounds never get picked as a breakpoint's bound, but 0 * inf
  # in the one-hot reductions would be NaN.
  finite_lower = tf.where(tf.math.is_finite(lower), lower, zero)
  finite_upper = tf.where(tf.math.is_finite(upper), upper, zero)
  to_bound = tf.where(d > 0, finite_upper, finite_lower) - x

  p = _small.matvec(w, d, transpose_a=True)            # W^T d, [B, 2m]
  c = tf.zeros_like(p)
  f1 = -dot(d, d)
  f2_org = -theta * f1
  f2 = f2_org - dot(p, _small.matvec(m, p))
  dtm = segment_minimiser(f1, f2)
  tsum = tf.zeros_like(f1)
  done = tf.equal(num_breaks, 0)
  hit = tf.zeros_like(x, dtype=tf.bool)
  index = tf.range(n)[None]

  def cond(k, done, *unused):
    del unused
    return (k < n) & tf.reduce_any(~done)

  def body(k, done, tsum, f1, f2, dtm, p, c, hit):
    # The next breakpoint of each member: the smallest not yet passed, the
    # lowest index among equals (the order of a stable sort).
    left = tf.where(hit, tf.constant(np.inf, dtype), breaks)
    next_break = tf.reduce_min(left, axis=-1)
    b = tf.reduce_min(tf.where(tf.equal(left, next_break[:, None]), index, n),
                      axis=-1)
    pick_b = tf.cast(tf.equal(index, b[:, None]), dtype)   # [B, n]
    live = ~done & (k < num_breaks)
    dt = next_break - tsum
    stop = live & (dtm < dt)
    fix = live & ~stop

    d_b = tf.where(fix, dot(d, pick_b), tf.zeros_like(dt))
    z_b = tf.where(fix, dot(to_bound, pick_b), tf.zeros_like(dt))
    dt = tf.where(fix, dt, tf.zeros_like(dt))
    w_b = tf.gather(w, tf.minimum(b, n - 1), batch_dims=1)     # [B, 2m]
    v = _small.matvec(m, w_b)
    new_c = c + dt[:, None] * p
    new_f1 = (f1 + dt * f2 + d_b * d_b - theta * d_b * z_b
              + d_b * dot(new_c, v))
    new_f2 = (f2 - theta * d_b * d_b + 2.0 * d_b * dot(p, v)
              - d_b * d_b * dot(w_b, v))
    new_f2 = tf.maximum(eps * f2_org, new_f2)
    new_p = p - d_b[:, None] * w_b
    moving_left = num_moving > k + 1
    new_dtm = tf.where(moving_left, segment_minimiser(new_f1, new_f2),
                       tf.zeros_like(dtm))

    def pick(new, old):
      return tf.where(fix, new, old)

    return (k + 1,
            done | stop | (fix & (~moving_left | (k + 1 >= num_breaks))),
            pick(tsum + dt, tsum), pick(new_f1, f1), pick(new_f2, f2),
            pick(new_dtm, dtm),
            tf.where(fix[:, None], new_p, p), tf.where(fix[:, None], new_c, c),
            hit | ((pick_b > 0) & fix[:, None]))

  (_, _, tsum, _, _, dtm, p, c, hit) = tf.while_loop(
      cond, body, (tf.constant(0), done, tsum, f1, f2, dtm, p, c, hit))
  d_left = tf.where(hit, zero, d)
  xcp, free, dtm = path_end(x, lower, upper, held, d, d_left, tsum, dtm, hit)
  return CauchyPoint(x=xcp, c=c + dtm[:, None] * p, free=free)
