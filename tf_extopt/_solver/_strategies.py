"""The two `_driver.Strategy`s: plain L-BFGS and L-BFGS-B.

`lbfgs_minimize` runs `unconstrained_strategy`; `lbfgsb_minimize` runs
`bounded_strategy`, which falls back to the unconstrained one for problems
(or batch members) without bounds.
"""

import functools

import numpy as np
import tensorflow as tf

from tf_extopt._solver._lbfgsb import _cauchy
from tf_extopt._solver._lbfgsb import _compact
from tf_extopt._solver import _convergence
from tf_extopt._solver._lbfgsb import _dense
from tf_extopt._solver import _driver
from tf_extopt._solver import _memory
from tf_extopt._solver._lbfgsb import _subspace
from tf_extopt import _devices

# SciPy's L-BFGS-B cap on a step that no bound limits (``stpmx``).
MAX_STEP = 1e10

# On a CPU, bounded batches of at least `CHUNKED_MIN_BATCH` members (static
# batch size) compute their directions `CHUNK` members at a time, only for
# the members that need one (see `_in_chunks`).
CHUNK = 32
CHUNKED_MIN_BATCH = 2 * CHUNK


def unconstrained_strategy(initial_inverse_hessian=None,
                           exact_line_search=None):
  """The `_driver.Strategy` of plain L-BFGS (optionally with a fixed `H0`).

  `exact_line_search` is `lbfgs_minimize`'s option: None refines steps by
  the problem's size, True always, False never (`Strategy.refine_steps`).
  """

  def direction(x, g, memory, where=None):
    # Every member at once, unlike the bounded strategy: the two-loop
    # recursion is cheap beside chunking's gathers, and chunks made plain
    # L-BFGS batches slower (benchmarks/README.md, "Directions in chunks").
    del x, where
    return _memory.direction(memory, g, initial_inverse_hessian)

  def steepest_direction(x, g):
    # The two-loop recursion's result for an empty memory: -H0 g, H0 = I.
    del x
    if initial_inverse_hessian is None:
      return -g
    return -(initial_inverse_hessian * g)

  def max_step(x, d):
    del d
    return _driver.per_member(x, MAX_STEP)

  def initial_step(d, iteration, memory):
    one = _driver.per_member(d, 1.0)
    if initial_inverse_hessian is not None:
      return one
    first = tf.equal(iteration, 0) & tf.equal(memory.count, 0)
    return tf.where(first,
                    tf.math.divide_no_nan(one, tf.norm(d, axis=-1)), one)

  def stationarity(x, g):
    del x
    return _convergence.sup_norm(g)

  return _driver.Strategy(
      direction=direction, steepest_direction=steepest_direction,
      stationarity=stationarity, max_step=max_step,
      initial_step=initial_step, project=lambda x: x,
      reset_on_bad_curvature=True, refine_steps=exact_line_search)


def bounded_strategy(lower, upper, dense_ratio):
  """The `_driver.Strategy` of L-BFGS-B for flat `[B, n]` bounds.

  The explicit `n x n` matrix (`_dense`) is used while `n <= dense_ratio *
  m`, the compact representation beyond.
  """
  unbounded = tf.reduce_all(
      tf.equal(lower, -np.inf) & tf.equal(upper, np.inf), axis=-1)
  # Checked here for every member, since under XLA the assertions on bounds
  # known only at run time do not run.
  valid = tf.reduce_all(
      (lower <= upper) & tf.not_equal(lower, np.inf)
      & tf.not_equal(upper, -np.inf), axis=-1)
  boxed = tf.reduce_all(
      tf.math.is_finite(lower) & tf.math.is_finite(upper), axis=-1)

  plain_strategy = unconstrained_strategy()

  def project(x):
    return tf.clip_by_value(x, lower, upper)

  def member_directions(x, g, memory, lower, upper, unbounded):
    n = x.shape[-1]
    if n is not None and n <= dense_ratio * memory.s.shape[0]:
      theta, matrix = _dense.bfgs_matrix(memory)
      cauchy = _dense.cauchy_point(x, g, lower, upper, theta, matrix)
      du, ok = _dense.explicit_newton_step(x, g, matrix, cauchy)
      representation_ok = tf.ones_like(ok)
    else:
      compact = _compact.compact_form(memory)
      cauchy = _cauchy.generalized_cauchy_point(x, g, lower, upper, compact)
      du, ok = _subspace.compact_newton_step(x, g, compact, cauchy)
      representation_ok = compact.ok
    plain = plain_strategy.direction(x, g, memory)
    # With every variable free at x^c the subspace minimiser is the model's
    # unconstrained minimiser x - H g: take it from the two-loop recursion,
    # which is the same point but far better conditioned in float32 than the
    # 2m x 2m systems once the pairs are tiny.
    all_free = tf.reduce_all(cauchy.free, axis=-1)
    du = tf.where(all_free[:, None], x + plain - cauchy.x, du)
    ok = ok | all_free
    x_bar = _subspace.bring_inside(x, g, lower, upper, cauchy, du)
    use_subspace = (memory.count > 0) & tf.reduce_any(cauchy.free, axis=-1)
    x_bar = tf.where(use_subspace[:, None], x_bar, cauchy.x)
    d = x_bar - x
    # A singular system: NaN makes the driver drop the memory and recompute.
    ok = representation_ok & (ok | ~use_subspace)
    d = tf.where(ok[:, None], d, tf.constant(np.nan, x.dtype))
    return tf.where(unbounded[:, None], plain, d)

  def direction(x, g, memory, where):
    if not _chunked(x):
      return member_directions(x, g, memory, lower, upper, unbounded)
    return _in_chunks(member_directions, where, x, g, memory, lower, upper,
                      unbounded)

  def steepest_direction(x, g):
    # With no pairs B = I (theta = 1), the model g.z + |z|^2 / 2 is separable
    # and its minimiser over the box, the Cauchy point, is P(x - g); without
    # pairs there is no subspace step. Members without bounds take -g
    # exactly, as plain L-BFGS does.
    return tf.where(unbounded[:, None], -g, project(x - g) - x)

  def max_step(x, d):
    big = tf.constant(MAX_STEP, x.dtype)
    to_bound = tf.where(
        d > 0, (upper - x) / tf.where(d > 0, d, tf.ones_like(d)),
        tf.where(d < 0, (lower - x) / tf.where(d < 0, d, tf.ones_like(d)),
                 big))
    feasible = tf.minimum(tf.reduce_min(to_bound, axis=-1), big)
    # x + d is feasible by construction; do not let roundoff cut it short.
    feasible = tf.maximum(feasible, tf.ones_like(feasible))
    return tf.where(unbounded, tf.fill(tf.shape(feasible), big), feasible)

  def initial_step(d, iteration, memory):
    one = _driver.per_member(d, 1.0)
    first = tf.equal(iteration, 0) & tf.equal(memory.count, 0)
    inverse_norm = tf.math.divide_no_nan(one, tf.norm(d, axis=-1))
    bounded_first = tf.where(boxed, one, tf.minimum(inverse_norm, one))
    return tf.where(first, tf.where(unbounded, inverse_norm, bounded_first),
                    one)

  def stationarity(x, g):
    return _convergence.sup_norm(tf.clip_by_value(x - g, lower, upper) - x)

  return _driver.Strategy(
      direction=direction, steepest_direction=steepest_direction,
      stationarity=stationarity, max_step=max_step,
      initial_step=initial_step, project=project,
      reset_on_bad_curvature=False, valid=valid)


def _chunked(x):
  """Whether directions are computed in chunks for this `[B, n]` batch."""
  batch_size = x.shape[0]
  return (batch_size is not None and batch_size >= CHUNKED_MIN_BATCH
          and not _devices.accelerator_visible())


def _in_chunks(member_directions, where, x, g, memory, *per_member):
  """`member_directions` for the `where` members only, `CHUNK` at a time.

  A trip needs new directions only for the members whose line search just
  ended, and in a large batch most members are searching or already done:
  the batch runs as many trips as its slowest member, far more than its
  median member needs. The
  `where` members are moved to the front, in batch order, and a
  `tf.while_loop` computes their directions in chunks of `CHUNK` members,
  as many chunks as they fill. Small chunks also keep a chunk's compact form
  in a CPU's caches. Same iterates; the chunk sizes tried and the time
  saved are in benchmarks/README.md, "Directions in chunks". Not done on GPU
  or TPU (untested), where
  one wide batch is what keeps the device busy.

  Other members' directions are zero; the driver discards them.
  """
  batch_size = x.shape[0]
  # Padded to whole chunks by repeating members of the first chunk, whose
  # duplicate writes (in another chunk) are identical.
  order = tf.argsort(tf.cast(~where, tf.int32), stable=True)
  num_slots = -(-batch_size // CHUNK) * CHUNK
  order = tf.concat([order, order[:num_slots - batch_size]], axis=0)
  num_chunks = (tf.reduce_sum(tf.cast(where, tf.int32)) + CHUNK - 1) // CHUNK

  def body(k, d):
    index = tf.slice(order, [k * CHUNK], [CHUNK])
    take = functools.partial(tf.gather, indices=index)
    chunk_d = member_directions(
        take(x), take(g), _memory.select(memory, index),
        *[take(t) for t in per_member])
    # The last chunk's tail holds members that did not ask.
    chunk_d = tf.where(take(where)[:, None], chunk_d, tf.zeros_like(chunk_d))
    return k + 1, tf.tensor_scatter_nd_update(d, index[:, None], chunk_d)

  _, d = tf.while_loop(lambda k, _: k < num_chunks, body,
                       (tf.constant(0), tf.zeros_like(x)))
  return d
