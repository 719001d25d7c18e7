"""Compiled, batched L-BFGS-B: bound-constrained L-BFGS on device."""

import numpy as np
import tensorflow as tf

from tf_extopt._solver import _driver
from tf_extopt._solver import _eager
from tf_extopt._solver import _strategies
from tf_extopt import _validation

__all__ = ["lbfgsb_minimize"]

# The explicit n x n matrix (`_dense`) is used while n <= this times the
# number of pairs m, i.e. while it is no larger than the compact
# representation's 2m x 2m middle matrix; the compact form beyond. Read at
# trace time.
DENSE_RATIO = 2


# Like TFP's optimizers (which AutoGraph never converts), the solver is
# plain TensorFlow: converting it inside a caller's `tf.function` only
# costs tracing time, seconds per trace.
@tf.autograph.experimental.do_not_convert
def lbfgsb_minimize(value_and_gradients_function,
                    initial_position,
                    lower_bounds=None,
                    upper_bounds=None,
                    previous_optimizer_results=None,
                    num_correction_pairs=10,
                    tolerance=1e-8,
                    x_tolerance=0,
                    f_relative_tolerance=0,
                    max_iterations=50,
                    parallel_iterations=1,
                    stopping_condition=None,
                    max_line_search_iterations=50,
                    f_absolute_tolerance=0,
                    name=None,
                    *,
                    compile_update=None,
                    exact_line_search=None,
                    trace_fn=None):
  """Minimizes a differentiable function subject to bounds, with L-BFGS-B.

  Solves `min f(x)` subject to `lower <= x <= upper` for one problem `[n]` or
  independent problems `[..., n]` at once, each with its own box, in one
  `tf.while_loop` whose every trip is one batched objective evaluation. It
  runs eagerly, in `tf.function` and under `tf.function(jit_compile=True)`.

  Usage, a quadratic bowl with its minimum at `[1, 2]`, and a box
  that excludes it:

  ```python
  import tensorflow as tf
  import tf_extopt

  minimum = tf.constant([1.0, 2.0], tf.float64)
  scales = tf.constant([2.0, 3.0], tf.float64)

  def quadratic(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      value = tf.reduce_sum(scales * tf.square(x - minimum), axis=-1)
    return value, tape.gradient(value, x)

  start = tf.constant([0.6, 0.8], tf.float64)
  results = tf_extopt.lbfgsb_minimize(
      quadratic, initial_position=start, lower_bounds=0.0,
      upper_bounds=[0.5, 5.0], tolerance=1e-8)
  results.converged  # True
  results.position   # [0.5, 2.]: the first variable at its upper bound
  ```

  `None` or an infinite bound leaves a side unbounded.

  This is L-BFGS-B (Byrd, Lu, Nocedal & Zhu, 1995) as SciPy ships it
  (version 3.0, Morales & Nocedal 2011). Each iteration of each member:

  1. **Generalized Cauchy point** (`_cauchy`): the first local minimiser of
     the quadratic model `m(x) = g.(x - x_k) + 1/2 (x - x_k)^T B (x - x_k)`
     along the projected steepest-descent path `P(x_k - t g)`, visiting the
     breakpoints in order. `B = theta I - W M W^T` is the compact limited-
     memory matrix of the last `num_correction_pairs` pairs (`_compact`). The
     variables at a bound there form the active set. For few variables
     (`n <= 2 * num_correction_pairs`, with `n` static) the same matrix is
     formed explicitly as `n x n` (`_dense`), which needs no `2m x 2m`
     factorisation and is several times faster in a large batch.
  2. **Subspace minimisation** (`_subspace`): the free variables minimise the
     model with the active ones held (direct primal method); the result is
     projected into the box, or backtracked towards the Cauchy point when the
     projection spoils descent. Skipped with an empty memory (the direction is
     then the Cauchy step, as in SciPy).
  3. **Line search** along `d = x_bar - x_k`: Moré–Thuente strong Wolfe
     (`ftol=1e-3`, `gtol=0.9`), first trial step 1, never past the box (the
     largest feasible step caps it).
  4. **Memory update**: the pair `(s, y)` is stored only when
     `s.y > eps |g.s|`; otherwise it is skipped and the memory kept.

  Convergence: `max_i |P(x - g)_i - x_i| <= tolerance` (SciPy's `pgtol`, the
  sup-norm of the projected gradient), or the `x_tolerance` /
  `f_relative_tolerance` / `f_absolute_tolerance` tests of
  `lbfgs_minimize`.

  Notation map (paper -> code): `x^c` -> `CauchyPoint.x`; `c = W^T(x^c - x)`
  -> `CauchyPoint.c`; free set `F`, `Z` -> the mask `CauchyPoint.free`;
  `theta, W, M` -> `CompactForm.theta, .w, .m`; `S_k, Y_k` ->
  `position_deltas, gradient_deltas`; `t_j` (breakpoints), `f', f''`, `p`,
  `d` -> the same names in `_cauchy`; `r^c, d^u, N` -> `r, du, n_matrix` in
  `_subspace`; `x_bar` -> the subspace minimiser; `stpmx` -> the line search's
  `max_step`; `pgtol` -> `tolerance`.

  **Bounds and the start point.** `lower_bounds` and `upper_bounds` broadcast
  to the position's shape `[..., n]`; `None`, `-inf` (lower) or `+inf` (upper)
  mean no bound. `initial_position` is projected onto the box before the
  first evaluation, so a start outside the box is allowed: the solver starts
  from the nearest feasible point. `previous_optimizer_results` resumes from
  its (feasible) positions unchanged.

  **No bounds.** When both bounds are `None` (or statically all infinite)
  this is exactly `lbfgs_minimize`: same path, same evaluation count. In a
  batch that mixes bounded and unbounded members, a member without any finite
  bound takes the plain two-loop L-BFGS direction, which equals the
  L-BFGS-B direction when nothing is active.

  Called eagerly, the loop runs as a cached `tf.function`, as for
  `lbfgs_minimize`.

  Deliberate deviations from SciPy:

  * Batched: members never wait for each other; `num_objective_evaluations`
    counts batched calls (the slowest member's count).
  * The line search may extrapolate beyond the Cauchy point on the first
    iteration (SciPy caps the first step at 1); afterwards both cap it at the
    largest feasible step.
  * `max_line_search_iterations` defaults to 50 (SciPy's `maxls` is 20).
    A failed line search drops the memory and retries once from the Cauchy
    step, as SciPy does; failing again marks the member `failed`.
  * If the `2m x 2m` systems are numerically singular the memory is dropped
    (SciPy does the same when its factorisation fails).
  * Non-finite values follow `lbfgs_minimize`: a trial with NaN or +inf
    shrinks the step; a start with one marks the member failed; -inf is a
    minimum.
  * A fully unbounded problem resets the memory on a pair with bad curvature
    (like `lbfgs_minimize`); with bounds the pair is skipped (like SciPy).
  * Active variables land on their bound up to roundoff of `x + (l - x)`.
  * When every variable is free at the Cauchy point, the subspace step is
    taken from the two-loop recursion (the same point in exact arithmetic),
    which stays accurate in float32 where the compact 2m x 2m systems do not.

  Args:
    value_and_gradients_function: callable taking a point `[..., n]` and
      returning `(value [...], gradient [..., n])` in the point's dtype.
    initial_position: real `Tensor` `[..., n]` (float32 or float64), or None
      when `previous_optimizer_results` is given. Projected onto the box.
    lower_bounds: None, or a Tensor/array broadcastable to `[..., n]`;
      `-inf` entries (or `None` entries in a Python list) mean unbounded.
    upper_bounds: None, or a Tensor/array broadcastable to `[..., n]`;
      `+inf` entries (or `None` entries in a Python list) mean unbounded.
      Must satisfy `lower_bounds <= upper_bounds`; equal bounds fix a
      variable.
    previous_optimizer_results: an `LBfgsOptimizerResults` (or a namedtuple
      with its fields, such as TFP's) to resume from, as in
      `lbfgs_minimize` (results of no evaluation are a start point, which
      is projected onto the box). Exactly one of this and
      `initial_position` must be given.
    num_correction_pairs: Python int >= 1, the memory size `m`.
    tolerance: scalar >= 0; converged when the sup-norm of the projected
      gradient `P(x - g) - x` is at most `tolerance`.
    x_tolerance: scalar >= 0; converged when `max_i |x_{k+1} - x_k|_i <=
      x_tolerance`.
    f_relative_tolerance: scalar >= 0; converged when
      `|f_{k+1} - f_k| <= f_relative_tolerance * |f_k|`.
    max_iterations: scalar int >= 0, iterations per member.
    parallel_iterations: Python int >= 1, passed to `tf.while_loop`.
    stopping_condition: None or callable `(converged, failed) -> bool scalar`;
      default `converged_all`.
    max_line_search_iterations: Python int >= 1, objective evaluations
      allowed per line search.
    f_absolute_tolerance: scalar >= 0; converged when
      `|f_{k+1} - f_k| <= f_absolute_tolerance`.
    name: optional name scope, default `'lbfgsb_minimize'`.
    compile_update: keyword-only; None (default), True or False. Whether
      each trip's own arithmetic (line search, memory update, direction) runs
      as one XLA computation when the loop itself is not compiled with XLA.
      None does so in a graph (a `tf.function`, or an eager call, which runs
      as one) whose static batch size is at least 256, where it makes a
      batch of small problems faster (the objective is not compiled; the
      first call pays for the compilation; see benchmarks/README.md, "A
      batch of 1000 Rosenbrock-10 problems"). True
      also applies it to small batches and to the op-by-op loop; False
      never. Under `jit_compile=True` it changes nothing.
    exact_line_search: keyword-only; None (default), True or False: as in
      `lbfgs_minimize`, for a problem without bounds. With bounds the line
      search is L-BFGS-B's, never refined.
    trace_fn: keyword-only; None, or a callable recording per-iteration
      values from inside the loop, as in `lbfgs_minimize`.

  Returns:
    `LBfgsOptimizerResults`, the same fields as `lbfgs_minimize`;
    `objective_gradient` is the plain (unprojected) gradient. With a
    `trace_fn`, a pair `(results, trace)` as in `lbfgs_minimize`.

  Raises:
    ValueError: bounds that do not broadcast to the position's shape, contain
      NaN, a lower bound of +inf or an upper bound of -inf, or have
      `lower_bounds > upper_bounds` somewhere (in graph mode, when the values
      are not static, an `InvalidArgumentError` from an assertion at run
      time instead; under `jit_compile=True`, where XLA runs no assertions,
      such a batch member is returned `failed` at its start point, with no
      step taken); and every `ValueError` of `lbfgs_minimize`.
    TypeError: bounds that are not numbers; and every `TypeError` of
      `lbfgs_minimize`.

  References:
    R. H. Byrd, P. Lu, J. Nocedal, C. Zhu. A limited memory algorithm for
    bound constrained optimization. SIAM J. Sci. Comput. 16(5), 1995.
    R. H. Byrd, J. Nocedal, R. B. Schnabel. Representations of quasi-Newton
    matrices and their use in limited memory methods. Math. Prog. 63, 1994.
    J. L. Morales, J. Nocedal. Remark on "Algorithm 778: L-BFGS-B". ACM TOMS
    38(1), 2011.
  """
  # The options the driver takes as they are; the eager call passes them on.
  options = dict(
      num_correction_pairs=num_correction_pairs, tolerance=tolerance,
      x_tolerance=x_tolerance, f_relative_tolerance=f_relative_tolerance,
      f_absolute_tolerance=f_absolute_tolerance,
      max_iterations=max_iterations,
      parallel_iterations=parallel_iterations,
      stopping_condition=stopping_condition,
      max_line_search_iterations=max_line_search_iterations,
      compile_update=compile_update, trace_fn=trace_fn)
  exact_line_search = _validation.bool_or_none(exact_line_search,
                                               "exact_line_search")
  if _eager.compiles_here():
    return _eager.call(lbfgsb_minimize, value_and_gradients_function, dict(
        initial_position=initial_position, lower_bounds=lower_bounds,
        upper_bounds=upper_bounds,
        previous_optimizer_results=previous_optimizer_results, name=name,
        exact_line_search=exact_line_search, **options), _eager_tensors)
  with tf.name_scope(name or "lbfgsb_minimize"):

    def make_strategy(position):
      lower, checks = _bound(lower_bounds, "lower_bounds", position, -np.inf)
      upper, more = _bound(upper_bounds, "upper_bounds", position, np.inf)
      checks += more
      checks += _check_order(lower, upper)
      # An empty problem (n = 0) has no bound to honour, and the Cauchy
      # point's reductions need at least one variable.
      if _statically_unbounded(lower, upper) or position.shape[-1] == 0:
        return _strategies.unconstrained_strategy(
            exact_line_search=exact_line_search), checks
      flat = tf.stack([-1, tf.shape(position)[-1]])
      lower = tf.reshape(tf.broadcast_to(lower, tf.shape(position)), flat)
      upper = tf.reshape(tf.broadcast_to(upper, tf.shape(position)), flat)
      return _strategies.bounded_strategy(lower, upper, DENSE_RATIO), checks

    return _driver.minimize(
        value_and_gradients_function, initial_position,
        previous_optimizer_results, make_strategy, **options)

def _eager_tensors(arguments):
  """The tensor-valued arguments of an eager call, converted and checked.

  Bounds that are all infinite are passed as None: the solver tells an
  unbounded problem from the static values, which a traced argument lacks.
  The others are broadcast to the position's shape, so that a scalar bound
  and a per-variable one do not trace twice.
  """
  position, tensors = _eager.common_tensors(arguments)
  lower, _ = _bound(arguments["lower_bounds"], "lower_bounds", position,
                    -np.inf)
  upper, _ = _bound(arguments["upper_bounds"], "upper_bounds", position,
                    np.inf)
  _check_order(lower, upper)
  if not _statically_unbounded(lower, upper):
    for name, bound in (("lower_bounds", lower), ("upper_bounds", upper)):
      if arguments[name] is not None:
        tensors[name] = tf.broadcast_to(bound, tf.shape(position))
  return tensors


def _bound(value, name, position, default):
  """Converts one bound to the position's dtype; checks its shape and values.

  Returns:
    `(tensor broadcastable to the position, assertions)`.
  """
  dtype = position.dtype
  if value is None:
    return tf.constant(default, dtype), []
  if tf.is_tensor(value):
    if not (value.dtype.is_floating or value.dtype.is_integer):
      raise TypeError(f"`{name}` must be a real Tensor broadcastable to the "
                      f"position's shape [..., n]; got dtype "
                      f"{value.dtype.name}.")
    tensor = tf.cast(value, dtype)
  else:
    try:
      array = np.asarray(value, dtype=object)
      array = np.where(np.equal(array, None), default, array)
      array = array.astype(np.float64)
    except (TypeError, ValueError) as error:
      raise TypeError(
          f"`{name}` must be None or numbers broadcastable to the position's "
          f"shape [..., n] (None or {default} for no bound); got {value!r} "
          f"({error}).") from None
    tensor = tf.constant(array, dtype)
  try:
    broadcast = tf.broadcast_static_shape(tensor.shape, position.shape)
    ok = not (broadcast.is_fully_defined() and position.shape.is_fully_defined()
              and broadcast != position.shape)
    ok = ok and (tensor.shape.rank is None or position.shape.rank is None
                 or tensor.shape.rank <= position.shape.rank)
  except ValueError:
    ok = False
  if not ok:
    raise ValueError(
        f"`{name}` of shape {tensor.shape} does not broadcast to the "
        f"position's shape {position.shape}; give one bound per variable "
        "[n], one box per batch member [..., n], or a scalar.")
  static = tf.get_static_value(tensor)
  checks = []
  bad_inf = np.inf if default < 0 else -np.inf
  if static is not None:
    if np.any(np.isnan(static)):
      raise ValueError(f"`{name}` must not contain NaN (use {default} for no "
                       f"bound); got {static}.")
    if np.any(static == bad_inf):
      raise ValueError(f"`{name}` must not contain {bad_inf}: no point "
                       f"satisfies it; got {static}.")
  else:
    checks.append(tf.debugging.Assert(
        tf.reduce_all(~tf.math.is_nan(tensor) & tf.not_equal(tensor, bad_inf)),
        [f"`{name}` must not contain NaN or {bad_inf}"]))
  return tensor, checks


def _check_order(lower, upper):
  static_lower = tf.get_static_value(lower)
  static_upper = tf.get_static_value(upper)
  if static_lower is not None and static_upper is not None:
    bad = np.broadcast_to(static_lower > static_upper,
                          np.broadcast_shapes(np.shape(static_lower),
                                              np.shape(static_upper)))
    if np.any(bad):
      where = np.argwhere(bad)[0]
      raise ValueError(
          "`lower_bounds` must be <= `upper_bounds` everywhere; got "
          f"lower {np.broadcast_to(static_lower, bad.shape)[tuple(where)]} > "
          f"upper {np.broadcast_to(static_upper, bad.shape)[tuple(where)]} at "
          f"index {tuple(int(i) for i in where)}.")
    return []
  return [tf.debugging.assert_less_equal(
      lower, upper, message="`lower_bounds` must be <= `upper_bounds`")]


def _statically_unbounded(lower, upper):
  static_lower = tf.get_static_value(lower)
  static_upper = tf.get_static_value(upper)
  return (static_lower is not None and static_upper is not None
          and np.all(static_lower == -np.inf)
          and np.all(static_upper == np.inf))
