"""Compiled, batched L-BFGS: a drop-in for `tfp.optimizer.lbfgs_minimize`."""

import tensorflow as tf

from tf_extopt._solver import _driver
from tf_extopt._solver import _eager
from tf_extopt._solver import _strategies
from tf_extopt import _validation

__all__ = ["lbfgs_minimize"]

# Like TFP's optimizers (which AutoGraph never converts), the solver is
# plain TensorFlow: converting it inside a caller's `tf.function` only
# costs tracing time, seconds per trace.
@tf.autograph.experimental.do_not_convert
def lbfgs_minimize(value_and_gradients_function,
                   initial_position,
                   previous_optimizer_results=None,
                   num_correction_pairs=10,
                   tolerance=1e-8,
                   x_tolerance=0,
                   f_relative_tolerance=0,
                   initial_inverse_hessian_estimate=None,
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
  """Minimizes a differentiable function with batched L-BFGS.

  Same signature and result as `tfp.optimizer.lbfgs_minimize`; it runs
  eagerly, inside `tf.function` and under `tf.function(jit_compile=True)`,
  for one problem `[n]` or independent problems `[..., n]`, in one
  `tf.while_loop` whose every trip is one batched objective evaluation.

  Each iteration follows Algorithm 7.5 of Nocedal & Wright (2006): the
  direction is `d = -H_k g_k` from the two-loop recursion over the last
  `num_correction_pairs` pairs `(s_i, y_i)` (`position_deltas`,
  `gradient_deltas`), with `H0 = gamma_k I`, `gamma_k = s.y / y.y` of the
  newest pair (or `initial_inverse_hessian_estimate`). The step comes from a
  Moré–Thuente strong-Wolfe line search (`ftol=1e-3`, `gtol=0.9`, as in SciPy's
  L-BFGS-B) that accepts the first trial when it satisfies the conditions, so
  one evaluation per iteration is the common case. The first trial is the unit
  step, except on the very first iteration, where it is `1 / ||d||_2` (a step
  of unit length, as SciPy does) unless `initial_inverse_hessian_estimate`
  sets the scale.

  Usage, a quadratic bowl with its minimum at `[1, 2]`:

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
  results = tf_extopt.lbfgs_minimize(
      quadratic, initial_position=start, tolerance=1e-8)
  results.converged  # True
  results.position   # [1., 2.]
  ```

  A start `[..., n]` solves a batch of such problems in the same call.

  Called eagerly, the loop is traced once into a `tf.function` that is
  cached per objective and static options and reused (see `_eager`); an
  objective that cannot be traced runs op by op with a `NotCompiledWarning`.

  Refinement: after a trial step `a` with sufficient decrease (Wolfe or
  not) that does not already meet `tolerance`, one more evaluation may go to
  the minimiser of the quadratic through `phi(0)`, `phi'(0)` and `phi'(a)`,
  `a* = a phi'(0) / (phi'(0) - phi'(a))`, kept if it is no higher. With no
  more variables than `num_correction_pairs` (`n <= m`) this happens only
  when that quadratic fits the line (the cubic term of the Hermite fit is
  small: `|phi(a) - phi(0) - a (phi'(0) + phi'(a)) / 2| <= 1e-3 (phi(0) -
  phi(a))`); with `n > m` after every such trial, since the iterations then
  depend on near-exact steps. On a quadratic this is the exact line search,
  so the iterations are those of TFP (whose Hager–Zhang steps land near the
  line minimum), e.g. the 100-D sphere in one iteration. See `_linesearch`
  for the details and the measurements behind the rule.

  Differences from TFP, all deliberate:

  * The line search is Moré–Thuente with the refinement above, not
    Hager–Zhang, which never accepts its first trial; the same minima take
    fewer evaluations (benchmarks/README.md, "`lbfgs_minimize`").
  * `f_relative_tolerance` compares `|f_{k+1} - f_k|` with
    `f_relative_tolerance * |f_k|`; TFP omits the absolute value, so its
    test never fires for negative objectives.
  * `initial_inverse_hessian_estimate` is supported (TFP raises).
  * A member whose pair has `s.y <= eps |g.s|`, or whose direction is not a
    descent direction, restarts from steepest descent; `failed` means even a
    steepest-descent search could not decrease the objective measurably
    (by more than its rounding noise), e.g. with a gradient of the wrong
    sign or a loss that changes between calls. Such a member is never
    `converged`, and keeps the best point it found.
  * At the limit of precision, where a step's decrease is below the
    objective's rounding noise (`100 eps |f|`), the line search accepts a
    step on its directional derivative alone (Hager and Zhang's approximate
    Wolfe conditions; TFP's line search has them too), so the result does
    not depend on how the machine rounds.
  * A trial point with a NaN or +inf value or gradient shrinks the step; a
    start point with one marks the member failed (position unchanged). A value
    of -inf is a minimum: the member converges there.
  * `max_iterations` counts each member's iterations; `num_iterations` is the
    largest count.

  Args:
    value_and_gradients_function: callable taking a point `[..., n]` and
      returning `(value [...], gradient [..., n])` in the point's dtype.
    initial_position: real `Tensor` `[..., n]` (float32 or float64), or None
      when `previous_optimizer_results` is given.
    previous_optimizer_results: an `LBfgsOptimizerResults` to resume from,
      or any namedtuple with its fields (TFP's results, for one). The
      stored pairs, counters and convergence flags carry over, so a run
      split in two follows the same path as one run. Results with
      `num_objective_evaluations == 0` hold a start point only: the run
      starts there as from `initial_position` (their other values are
      ignored). Exactly one of this and `initial_position` must be given.
    num_correction_pairs: Python int >= 1, the memory size `m`.
    tolerance: scalar >= 0; converged when `max_i |g_i| <= tolerance`.
    x_tolerance: scalar >= 0; converged when `max_i |x_{k+1} - x_k|_i <=
      x_tolerance`.
    f_relative_tolerance: scalar >= 0; converged when
      `|f_{k+1} - f_k| <= f_relative_tolerance * |f_k|`.
    initial_inverse_hessian_estimate: None, or a positive Tensor
      broadcastable to `[..., n]`: the diagonal of `H0`, used on every
      iteration instead of the `gamma_k I` scaling.
    max_iterations: scalar int >= 0, iterations per member.
    parallel_iterations: Python int >= 1, passed to `tf.while_loop`.
    stopping_condition: None or callable `(converged, failed) -> bool scalar`
      with arguments shaped `[...]`; default `converged_all`. The loop also
      stops when no member can move.
    max_line_search_iterations: Python int >= 1, objective evaluations
      allowed per line search (every trial counts).
    f_absolute_tolerance: scalar >= 0; converged when
      `|f_{k+1} - f_k| <= f_absolute_tolerance`.
    name: optional name scope, default `'minimize'`.
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
    exact_line_search: keyword-only; None (default), True or False. Whether
      the line search refines its Wolfe point towards the line minimum
      (the refinement above): None by the problem's size, True after every
      point with sufficient decrease (near-exact searches, about two
      evaluations per iteration and TFP's progress per iteration), False
      never (SciPy's L-BFGS-B search: about one evaluation per iteration,
      more iterations). With `max_iterations` as your budget keep the
      default; with wall time as the budget, False is usually faster to a
      given loss on neural networks (`benchmarks/time_to_loss.py`), and is
      the default of `LbfgsOptimizerInterface` and `tf_extopt.keras.fit`.
    trace_fn: keyword-only; None (default), or a callable taking an
      `LBfgsOptimizerResults` and returning a Tensor or a nest of Tensors,
      recorded inside the compiled loop after every iteration (for a batch:
      every time its `num_iterations`, the most advanced member's count,
      grows), as `tfp.math.minimize`'s `trace_fn` does. The results it sees
      are the state after that iteration. Under `jit_compile=True`,
      `max_iterations` must be known when the function is compiled (a
      Python int, or a constant): it sizes the record.

  Returns:
    `LBfgsOptimizerResults` (see its docstring for the fields and shapes).
    With a `trace_fn`, a pair `(results, trace)`: `trace` has
    `trace_fn`'s structure, each Tensor stacked along a new first axis of
    one entry per iteration made by this call.

  Usage, with the loss after every iteration:

  ```python
  results, losses = tf_extopt.lbfgs_minimize(
      value_and_gradients, start, trace_fn=lambda r: r.objective_value)
  ```

  Raises:
    ValueError: both or neither of `initial_position` and
      `previous_optimizer_results`; negative tolerances or `max_iterations`;
      `num_correction_pairs` or `max_line_search_iterations` below 1; an
      `initial_inverse_hessian_estimate` that does not broadcast or is not
      positive; a function returning values or gradients of the wrong shape.
    TypeError: a position that is not float32 or float64; tolerances or
      `max_iterations` that are not numbers (`max_iterations` not an
      integer); `previous_optimizer_results` without the result's fields; a
      non-callable function; a `stopping_condition` that is not callable as
      `(converged, failed)` or does not return a scalar bool; a function
      returning the wrong dtype or a None gradient; a `compile_update` or
      `exact_line_search` that is not None or a bool; a `trace_fn` that is
      not callable or returns something that is not Tensors.

  References:
    Jorge Nocedal, Stephen Wright. Numerical Optimization. Springer, 2006.
    J. J. Moré, D. J. Thuente. Line search algorithms with guaranteed
    sufficient decrease. ACM TOMS 20(3), 1994.
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
    return _eager.call(lbfgs_minimize, value_and_gradients_function, dict(
        initial_position=initial_position,
        previous_optimizer_results=previous_optimizer_results,
        initial_inverse_hessian_estimate=initial_inverse_hessian_estimate,
        name=name, exact_line_search=exact_line_search, **options),
                       _eager_tensors)
  with tf.name_scope(name or "minimize"):

    def make_strategy(position):
      assertions = []
      diagonal = None
      if initial_inverse_hessian_estimate is not None:
        diagonal, assertions = _validation.positive_diagonal(
            initial_inverse_hessian_estimate,
            "initial_inverse_hessian_estimate", position)
        diagonal = tf.reshape(diagonal,
                              tf.stack([-1, tf.shape(position)[-1]]))
      return _strategies.unconstrained_strategy(
          diagonal, exact_line_search), assertions

    return _driver.minimize(
        value_and_gradients_function, initial_position,
        previous_optimizer_results, make_strategy, **options)


def _eager_tensors(arguments):
  """The tensor-valued arguments of an eager call, converted and checked."""
  position, tensors = _eager.common_tensors(arguments)
  estimate = arguments["initial_inverse_hessian_estimate"]
  if estimate is not None:
    tensors["initial_inverse_hessian_estimate"], _ = (
        _validation.positive_diagonal(
            estimate, "initial_inverse_hessian_estimate", position))
  return tensors
