"""The batched quasi-Newton loop shared by `lbfgs_minimize` and `lbfgsb_minimize`.

One `tf.while_loop` trip is exactly one batched call of the objective. Every
batch member is always somewhere inside its own line search (see
`_linesearch`): a trip evaluates all members' trial points at once, advances
each member's search by one step, and the members whose search ended accept a
point, update their memory, test convergence and start their next search in
the same trip. Members never wait for each other, so a batch costs as many
evaluations as its slowest member, not the sum over iterations of the slowest
line search.

The algorithm-specific parts come in through a `Strategy`:

* ``direction(x, g, memory, where) -> d``: the quasi-Newton search
  direction of the members where `where` is true (others may get anything).
* ``steepest_direction(x, g) -> d``: the direction an empty memory gives
  (``-g``, ``-H0 g``, or ``P(x - g) - x`` under bounds), without the cost
  of `direction`: the first iteration and every memory reset use it.
* ``stationarity(x, g) -> [B]``: the quantity compared with `tolerance` (the
  sup-norm of the gradient, or of the projected gradient under bounds).
* ``max_step(x, d) -> [B]``: the largest step the line search may take.
* ``initial_step(d, iteration, memory) -> [B]``: the first trial step.
* ``project(x) -> x``: maps trial points into the feasible set.
* ``reset_on_bad_curvature``: when an accepted step has ``s.y <= eps |g.s|``,
  forget the memory (True) or just skip the pair (False).
* ``refine_steps`` (default False): whether the line search may spend one
  more trial at the modelled line minimiser after a point with sufficient
  decrease: False never; None under the rule `_linesearch.refine_tolerance`
  picks for the problem's size; True after every such point (see
  "Refinement" in `_linesearch`).
* ``valid`` (default None): a `[B]` bool tensor, false for members whose
  problem is invalid in a way only known at run time (bounds with NaN or
  ``lower > upper`` under XLA, where assertions do not run). Those members
  are `failed` from the start, at their unprojected start point, and never
  take a step.

Each iteration::

  d = direction(x, g, memory); if g.d >= 0: memory = {}, d = steepest(x, g)
  search along x + a d (one trial per trip) until strong Wolfe holds, or no
  further progress is possible / max_line_search_iterations trials were used:
    - Wolfe point, or a best point with f <= f(x):  accept it
    - otherwise, memory not empty: memory = {}, search again from x
    - otherwise (already steepest descent):          failed
  on acceptance: push (s, y) if s.y is safely positive, test convergence.
"""

import collections
import functools

import numpy as np
import tensorflow as tf

from tf_extopt._solver import _context
from tf_extopt._solver import _convergence
from tf_extopt._solver import _linesearch
from tf_extopt._solver import _memory
from tf_extopt import _validation
from tf_extopt._results import LBfgsOptimizerResults
from tf_extopt._results import converged_all

Strategy = collections.namedtuple(
    "Strategy",
    ["direction", "steepest_direction", "stationarity", "max_step",
     "initial_step", "project", "reset_on_bad_curvature", "refine_steps",
     "valid"],
    defaults=(False, None))

Config = collections.namedtuple(
    "Config",
    ["tolerance", "x_tolerance",
     "f_relative_tolerance", "f_absolute_tolerance", "max_iterations",
     "max_line_search_iterations", "parallel_iterations",
     "stopping_condition", "compile_update"])

_State = collections.namedtuple(
    "_State",
    ["iteration", "num_evaluations", "x", "f", "g", "memory", "converged",
     "failed", "direction", "search", "best_gradient"])


class Objective:
  """Calls the user's function on flat `[B, n]` points, checking its outputs.

  The user's function sees points shaped like `initial_position`; the loop
  works on `[B, n]`.
  """

  def __init__(self, value_and_gradients_function, position_shape,
               static_position_shape, dtype):
    self._function = value_and_gradients_function
    self._position_shape = position_shape
    self._static_shape = static_position_shape
    self._dtype = dtype
    self.flat_shape = _static_flat_shape(static_position_shape)

  def __call__(self, x_flat):
    x = tf.reshape(x_flat, self._position_shape)
    x.set_shape(self._static_shape)
    outputs = self._function(x)
    if not isinstance(outputs, (tuple, list)) or len(outputs) != 2:
      raise TypeError(
          "`value_and_gradients_function` must return a pair "
          f"(value, gradient); got {type(outputs).__name__}.")
    if outputs[1] is None:
      raise TypeError(
          "`value_and_gradients_function` returned a gradient of None. A "
          "None gradient (from tf.GradientTape or tf.gradients) usually means "
          "the value does not depend on the position.")
    value = tf.convert_to_tensor(outputs[0])
    gradient = tf.convert_to_tensor(outputs[1])
    self._check(value, "value", self._static_shape[:-1])
    self._check(gradient, "gradient", self._static_shape)
    value = tf.reshape(value, [-1])
    value.set_shape(self.flat_shape[:1])
    gradient = tf.reshape(gradient, tf.shape(x_flat))
    gradient.set_shape(self.flat_shape)
    return value, gradient

  def _check(self, tensor, what, expected_shape):
    if tensor.dtype != self._dtype:
      raise TypeError(
          f"`value_and_gradients_function` returned a {what} of dtype "
          f"{tensor.dtype.name}; expected {self._dtype.name}, the dtype of "
          "the position.")
    if not tensor.shape.is_compatible_with(expected_shape):
      raise ValueError(
          f"`value_and_gradients_function` returned a {what} of shape "
          f"{tensor.shape}; expected {expected_shape} for a position of "
          f"shape {self._static_shape}.")


def _static_flat_shape(static_position_shape):
  """The static `[B, n]` shape of the flattened position, where known."""
  if static_position_shape.rank is None:
    return tf.TensorShape([None, None])
  batch = static_position_shape[:-1]
  size = batch.num_elements() if batch.is_fully_defined() else None
  return tf.TensorShape([size, static_position_shape[-1]])


def per_member(x, value, dtype=None):
  """`value` for each member of the `[B, n]` batch `x`, as a `[B]` tensor.

  Its static shape is `x`'s batch size, as every `[B]` tensor of the loop's
  state has (`x[:, 0]` would fail for an empty problem, n = 0). `dtype`
  defaults to `x`'s.
  """
  return tf.reduce_sum(tf.zeros_like(x, dtype), axis=-1) + value


def _placeholder_search(value):
  """A search state for members that have none yet (never stepped)."""
  ones = tf.ones_like(value)
  return _linesearch.init(ones, value, -ones, ones)


def unevaluated_state(x, memory, iteration):
  """A start at `x` whose objective the loop's first trip evaluates.

  The start point is evaluated by the loop's first trip (see `_opened`),
  not by a call before the loop: the objective is then traced once, not
  twice, which halves what tracing (and XLA compilation) cost for the
  objective's part, the larger one for a neural network. Until that trip
  `num_evaluations` is 0; `memory` must be empty.
  """
  f = per_member(x, np.inf)
  no = tf.zeros_like(f, tf.bool)
  return _State(
      iteration=iteration, num_evaluations=tf.constant(0), x=x, f=f,
      g=tf.zeros_like(x), memory=memory, converged=no, failed=no,
      direction=tf.zeros_like(x), search=_placeholder_search(tf.zeros_like(f)),
      best_gradient=tf.zeros_like(x))


def _opened(config, strategy, state, f, g):
  """The first trip's update: the start point's value, flags and search."""
  x = state.x
  finite = _convergence.is_finite_point(f, g)
  minus_inf = _convergence.is_minus_inf(f)
  converged = minus_inf | (
      finite & (strategy.stationarity(x, g) <= config.tolerance))
  failed = ~converged & ~finite
  return _open(x, f, g, state.memory, state.iteration, tf.constant(1),
               converged, failed, config, strategy, empty_memory=True)


def resumed_state(x, f, g, memory, iteration, num_evaluations,
                  converged, failed, config, strategy):
  """Opens line searches from a previous run's results."""
  return _open(x, f, g, memory, iteration,
               tf.cast(num_evaluations, tf.int32), converged, failed,
               config, strategy)


def _open(x, f, g, memory, iteration, num_evaluations, converged, failed,
          config, strategy, empty_memory=False):
  everyone = tf.ones_like(converged)
  if strategy.valid is not None:
    failed = failed | ~strategy.valid
    converged = converged & strategy.valid
  state = _State(
      iteration=iteration, num_evaluations=num_evaluations, x=x, f=f, g=g,
      memory=memory, converged=converged, failed=failed,
      direction=tf.zeros_like(x), search=_placeholder_search(f),
      best_gradient=g)
  return _start_searches(state, everyone & _active(state, config), strategy,
                         empty_memory)


def _active(state, config):
  """`[B]` bool: the members the next trip evaluates for (all at first)."""
  return ((~state.converged & ~state.failed
           & (state.iteration < config.max_iterations))
          | tf.equal(state.num_evaluations, 0))


def _where(mask, new, old):
  """`tf.where` over a `[B]` mask for `[B]` or `[B, n]` tensors."""
  while len(mask.shape) < len(new.shape):
    mask = mask[..., None]
  return tf.where(mask, new, old)


def _start_searches(state, where, strategy, empty_memory=False):
  """Computes directions and opens a line search for the `where` members.

  `empty_memory` says the memory is known to hold no pair (a fresh start),
  so the direction is the steepest one without tracing `direction` at all.
  Otherwise `direction` is traced once here: a member whose direction is not
  a descent direction drops its memory and takes `steepest_direction`, which
  is what `direction` gives for an empty memory. (Tracing `direction` again
  for the retry, and in the loop's opening, made four copies of it in the
  graph, the heaviest part of L-BFGS-B's XLA compilation.)
  """
  memory = state.memory
  steepest = strategy.steepest_direction(state.x, state.g)
  if empty_memory:
    d = steepest
  else:
    d = strategy.direction(state.x, state.g, memory, where)
    slope = tf.reduce_sum(state.g * d, axis=-1)
    not_descent = where & ~(
        (slope < 0) & tf.reduce_all(tf.math.is_finite(d), axis=-1))
    memory = _memory.reset(memory, not_descent)
    d = _where(not_descent, steepest, d)
  slope = tf.reduce_sum(state.g * d, axis=-1)
  # Even steepest descent is not a descent direction (zero or non-finite
  # projected gradient that the tolerance did not catch): nothing to search.
  hopeless = where & ~(slope < 0)
  first = strategy.initial_step(d, state.iteration, memory)
  refine_tolerance = None
  if strategy.refine_steps is not False:
    refine_tolerance = _linesearch.refine_tolerance(
        tf.shape(state.x)[-1], tf.shape(memory.s)[0], strategy.refine_steps)
  search = _linesearch.init(first, state.f, slope,
                            strategy.max_step(state.x, d),
                            refine_tolerance=refine_tolerance)
  return state._replace(
      memory=memory,
      direction=_where(where, d, state.direction),
      search=tf.where(where[None], search, state.search),
      best_gradient=_where(where, state.g, state.best_gradient),
      failed=state.failed | hopeless)


def _trial_point(strategy, config, state):
  """Where each member evaluates next (its current point when inactive)."""
  step = _linesearch.unpack(state.search).step
  x_trial = strategy.project(state.x + step[:, None] * state.direction)
  return _where(_active(state, config), x_trial, state.x)


def _advance(config, strategy, state, x_trial, f_trial, g_trial):
  """Consumes one batched evaluation: every member's search takes a step."""
  active = _active(state, config)
  search = _linesearch.unpack(state.search)
  trial_ok = tf.reduce_all(tf.math.is_finite(x_trial), axis=-1)
  finite = trial_ok & _convergence.is_finite_point(f_trial, g_trial)
  slope = tf.reduce_sum(g_trial * state.direction, axis=-1)
  # A trial that already meets the gradient test needs no refinement.
  final = strategy.stationarity(x_trial, g_trial) <= config.tolerance
  new_packed, status, moved = _linesearch.step(state.search, f_trial, slope,
                                               finite, final)
  new_search = _linesearch.unpack(new_packed)
  best_gradient = _where(moved, g_trial, state.best_gradient)

  minus_inf = trial_ok & _convergence.is_minus_inf(f_trial)
  take_trial = active & (minus_inf | tf.equal(status, _linesearch.CONVERGED))
  give_up = active & ~take_trial & (
      tf.equal(status, _linesearch.WARNING)
      | (new_search.num_evaluations >= config.max_line_search_iterations))
  # Without a Wolfe point, fall back on the best point the search has seen
  # (the trial itself when a warning kept it out of the bracket update), as
  # SciPy's L-BFGS-B takes the point of a search that ends in a warning; but
  # only if it is measurably lower than where the search started. A point
  # within rounding noise of it is no progress: accepting it would let the
  # zero-tolerance "x or f did not change" tests report convergence at a
  # point the search could not improve on (a wrong gradient, a noisy loss).
  trial_is_best = finite & (f_trial < new_search.best_value)
  fallback_step = tf.where(trial_is_best, search.step, new_search.best_step)
  fallback_value = tf.where(trial_is_best, f_trial, new_search.best_value)
  take_best = give_up & (fallback_step > 0) & (
      search.initial_value - fallback_value
      > _linesearch.noise_level(search.initial_value))
  # A search that found nothing although even its first trial's predicted
  # change was within that noise ran out of digits, not out of descent:
  # the member has converged to working precision (what SciPy's factr test
  # and TFP's "f did not change" test report). Otherwise the search failed.
  at_precision = give_up & ~take_best & ~search.resolvable
  search_failed = give_up & ~take_best & ~at_precision
  accepted = take_trial | take_best

  use_trial = take_trial | trial_is_best
  x_new = _where(use_trial, x_trial, strategy.project(
      state.x + fallback_step[:, None] * state.direction))
  f_new = tf.where(use_trial, f_trial, fallback_value)
  g_new = _where(use_trial, g_trial, best_gradient)

  converged_now = accepted & _convergence.step_converged(
      state.x, x_new, state.f, f_new, strategy.stationarity(x_new, g_new),
      config.tolerance, config.x_tolerance, config.f_relative_tolerance,
      config.f_absolute_tolerance)
  s = x_new - state.x
  y = g_new - state.g
  eps = np.finfo(state.x.dtype.as_numpy_dtype).eps
  curvature_ok = tf.reduce_sum(s * y, axis=-1) > eps * tf.abs(
      tf.reduce_sum(state.g * s, axis=-1))
  keep_going = accepted & ~converged_now
  memory = _memory.push(state.memory, s, y, keep_going & curvature_ok)
  if strategy.reset_on_bad_curvature:
    memory = _memory.reset(memory, keep_going & ~curvature_ok)
  # A failed search restarts once from steepest descent; a failed steepest
  # descent search is a failure of the member.
  retry = search_failed & (memory.count > 0)
  failed = state.failed | (search_failed & tf.equal(memory.count, 0))
  memory = _memory.reset(memory, retry)

  state = _State(
      iteration=state.iteration + tf.cast(accepted, tf.int32),
      num_evaluations=state.num_evaluations + 1,
      x=_where(accepted, x_new, state.x),
      f=tf.where(accepted, f_new, state.f),
      g=_where(accepted, g_new, state.g),
      memory=memory,
      converged=state.converged | converged_now | at_precision,
      failed=failed,
      direction=state.direction,
      search=tf.where(active[None], new_packed, state.search),
      best_gradient=best_gradient)
  restart = (keep_going & (state.iteration < config.max_iterations)) | retry
  return _start_searches(state, restart, strategy)


# With `compile_update=None`, a graph-mode batch at least this large runs
# each trip's own arithmetic as one XLA computation; see `run`.
XLA_UPDATE_MIN_BATCH = 256


def _most_iterations(state):
  """The batch's iteration count, as TFP counts it.

  0 for an empty batch, as in TFP (`reduce_max` alone gives the int32
  minimum there).
  """
  return tf.maximum(tf.reduce_max(state.iteration), 0)


class Recorder:
  """Per-iteration records written from inside the loop (`trace_fn`).

  A record is `fn(state)`, taken after every trip in which the batch's
  iteration count (its most advanced member's, TFP's `num_iterations`)
  grows: once per iteration for one problem. The records go into buffers
  of `capacity` rows allocated before the loop (one row written per trip,
  in place), so the loop keeps fixed shapes and compiles with XLA.
  """

  def __init__(self, fn, capacity):
    self._fn = fn
    self.capacity = tf.maximum(capacity, 0)

  def start(self, state):
    """Empty buffers shaped after `fn`'s output on `state`, and a count."""
    buffers = tf.nest.map_structure(
        lambda value: tf.zeros(
            tf.concat([[tf.maximum(self.capacity, 1)], tf.shape(value)], 0),
            value.dtype),
        self._fn(state))
    return buffers, tf.constant(0)

  def write(self, buffers, count, before, after):
    """Records `after` if its iteration count grew from `before`'s."""
    grew = _most_iterations(after) > _most_iterations(before)
    row = tf.minimum(count, tf.maximum(self.capacity, 1) - 1)

    def put(buffer, value):
      return tf.tensor_scatter_nd_update(
          buffer, [[row]], [tf.where(grew, value, buffer[row])])

    buffers = tf.nest.map_structure(put, buffers, self._fn(after))
    return buffers, count + tf.cast(grew, tf.int32)

  @staticmethod
  def finish(buffers, count):
    """The records written, each buffer cut to `count` rows."""
    return tf.nest.map_structure(lambda buffer: buffer[:count], buffers)


def run(objective, state, config, strategy, batch_shape, recorder=None):
  """Runs the loop from `state` and returns the final state.

  With a `Recorder`, returns `(state, records)` instead.

  Outside XLA every small op of a trip is a separate kernel launch (or, when
  eager, a Python dispatch), and for a large batch of small problems those
  launches dominate. With `config.compile_update` the per-trip update that
  follows the objective (line search, memory, direction) is compiled with XLA
  as one computation; the user's objective is not. When it is None this is
  done in plain graphs (not eagerly) whose static batch size is at least
  `XLA_UPDATE_MIN_BATCH`. The compilation happens once per trace, on the
  first call (benchmarks/README.md, "A batch of 1000 Rosenbrock-10
  problems").
  Under XLA the whole loop is compiled already and this changes nothing.
  """
  advance = functools.partial(_advance, config, strategy)
  compile_update = config.compile_update
  if compile_update is None:
    batch_size = state.x.shape[0]
    compile_update = (not tf.executing_eagerly() and batch_size is not None
                      and batch_size >= XLA_UPDATE_MIN_BATCH)
  if compile_update and not _context.in_xla_context():
    advance = tf.function(advance, jit_compile=True, autograph=False)

  def cond(state):
    stop = _stopping_decision(config.stopping_condition,
                              tf.reshape(state.converged, batch_shape),
                              tf.reshape(state.failed, batch_shape))
    # The start is evaluated whatever `stopping_condition` says, as TFP
    # evaluates it before its loop.
    opening = tf.equal(state.num_evaluations, 0)
    return tf.reduce_any(_active(state, config)) & (opening | ~stop)

  def body(state, *records):
    # The first trip evaluates the start (its trial point is the start:
    # no direction yet), every other trip the line searches' trials.
    x_trial = _trial_point(strategy, config, state)
    f_trial, g_trial = objective(x_trial)
    new_state = tf.cond(
        tf.equal(state.num_evaluations, 0),
        lambda: _opened(config, strategy, state, f_trial, g_trial),
        lambda: advance(state, x_trial, f_trial, g_trial))
    if recorder is None:
      return (new_state,)
    return (new_state,) + recorder.write(*records, state, new_state)

  loop_vars = (state,)
  if recorder is not None:
    loop_vars += recorder.start(state)
  outputs = tf.while_loop(lambda state, *_: cond(state), body, loop_vars,
                          parallel_iterations=config.parallel_iterations)
  if recorder is None:
    return outputs[0]
  return outputs[0], recorder.finish(*outputs[1:])


def _stopping_decision(stopping_condition, converged, failed):
  """Calls `stopping_condition`; checks it gave one bool, at trace time."""
  expected = ("`stopping_condition` must be a callable (converged, failed) -> "
              "scalar bool Tensor, like tf_extopt.converged_all")
  try:
    stop = tf.convert_to_tensor(stopping_condition(converged, failed))
  except TypeError as error:
    raise TypeError(f"{expected}; calling it raised: {error}") from error
  if stop.dtype != tf.bool or stop.shape.rank not in (None, 0):
    raise TypeError(f"{expected}; it returned a {stop.dtype.name} Tensor of "
                    f"shape {stop.shape}.")
  return stop


def to_results(state, position_shape, batch_shape):
  """Packs a final loop state into `LBfgsOptimizerResults`."""
  position_deltas, gradient_deltas = _memory.to_deltas(state.memory,
                                                       position_shape)
  return LBfgsOptimizerResults(
      converged=tf.reshape(state.converged, batch_shape),
      failed=tf.reshape(state.failed, batch_shape),
      num_iterations=_most_iterations(state),
      num_objective_evaluations=state.num_evaluations,
      position=tf.reshape(state.x, position_shape),
      objective_value=tf.reshape(state.f, batch_shape),
      objective_gradient=tf.reshape(state.g, position_shape),
      position_deltas=position_deltas,
      gradient_deltas=gradient_deltas)


def minimize(value_and_gradients_function, initial_position,
             previous_optimizer_results, make_strategy, *,
             num_correction_pairs, tolerance, x_tolerance,
             f_relative_tolerance, f_absolute_tolerance, max_iterations,
             parallel_iterations, stopping_condition,
             max_line_search_iterations, compile_update=None, trace_fn=None):
  """Validates the arguments common to both solvers and runs the loop.

  Args:
    make_strategy: callable `(position_tensor) -> (Strategy, assertions)`,
      called once the position's dtype and shape are known, so that bounds or
      an initial inverse Hessian can be converted and broadcast against it.
    Others: as in `lbfgs_minimize`.

  Returns:
    `LBfgsOptimizerResults`, or `(results, trace)` with a `trace_fn`.
  """
  if not callable(value_and_gradients_function):
    raise TypeError("`value_and_gradients_function` must be callable; got "
                    f"{type(value_and_gradients_function).__name__}.")
  if (initial_position is None) == (previous_optimizer_results is None):
    raise ValueError(
        "Exactly one of `initial_position` and `previous_optimizer_results` "
        "must be given: `initial_position` to start a new search, "
        "`previous_optimizer_results` to resume one; got "
        + ("both." if initial_position is not None else "neither."))
  num_correction_pairs = _validation.positive_int(num_correction_pairs,
                                                  "num_correction_pairs")
  parallel_iterations = _validation.positive_int(parallel_iterations,
                                                 "parallel_iterations")
  stopping_condition = _validation.callable_or_none(stopping_condition,
                                                    "stopping_condition")
  trace_fn = _validation.callable_or_none(trace_fn, "trace_fn")
  compile_update = _validation.bool_or_none(compile_update, "compile_update")
  if stopping_condition is None:
    stopping_condition = converged_all

  if previous_optimizer_results is not None:
    previous_optimizer_results = _validation.previous_results(
        previous_optimizer_results, "previous_optimizer_results")
    position = _validation.position(previous_optimizer_results.position,
                                    "previous_optimizer_results.position")
  else:
    position = _validation.position(initial_position, "initial_position")
  dtype = position.dtype

  checks = []
  tolerances = {}
  for name, value in (("tolerance", tolerance),
                      ("x_tolerance", x_tolerance),
                      ("f_relative_tolerance", f_relative_tolerance),
                      ("f_absolute_tolerance", f_absolute_tolerance)):
    tolerances[name], assertions = _validation.non_negative(value, name,
                                                            dtype)
    checks += assertions
  max_iterations, assertions = _validation.non_negative(
      max_iterations, "max_iterations", tf.int32)
  checks += assertions
  max_line_search_iterations = _validation.positive_int(
      max_line_search_iterations, "max_line_search_iterations")

  strategy, assertions = make_strategy(position)
  checks += assertions

  config = Config(
      max_iterations=max_iterations,
      max_line_search_iterations=max_line_search_iterations,
      parallel_iterations=parallel_iterations,
      stopping_condition=stopping_condition,
      compile_update=compile_update,
      **tolerances)

  with tf.control_dependencies(checks):
    position_shape = tf.shape(position)
  batch_shape = position_shape[:-1]
  n = position.shape[-1] if position.shape[-1] is not None else (
      position_shape[-1])
  objective = Objective(value_and_gradients_function, position_shape,
                        position.shape, dtype)
  x = tf.reshape(position, tf.stack([-1, n]))
  x.set_shape(objective.flat_shape)
  # Static where known, so that the memory has static shapes too.
  batch_size = x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]

  def start(x, iteration):
    projected = strategy.project(x)
    x = projected if strategy.valid is None else _where(strategy.valid,
                                                        projected, x)
    memory = _memory.empty(batch_size, num_correction_pairs, n, dtype)
    return unevaluated_state(x, memory, iteration)

  # [B] with the batch's static size, so that every state the loop
  # carries has the same shapes.
  no_iterations = per_member(x, 0, tf.int32)
  if previous_optimizer_results is None:
    state = start(x, no_iterations)
  else:
    prev = previous_optimizer_results
    deltas_pairs = prev.position_deltas.shape[0]
    if deltas_pairs is not None and deltas_pairs != num_correction_pairs:
      raise ValueError(
          "`num_correction_pairs` must match the resumed run's memory: "
          f"`previous_optimizer_results` holds {deltas_pairs} pairs, "
          f"`num_correction_pairs` is {num_correction_pairs}.")
    iteration = no_iterations + tf.cast(prev.num_iterations, tf.int32)

    def resumed():
      memory = _memory.from_deltas(
          tf.convert_to_tensor(prev.position_deltas, dtype),
          tf.convert_to_tensor(prev.gradient_deltas, dtype), batch_size, n)
      return resumed_state(
          x, tf.reshape(tf.convert_to_tensor(prev.objective_value, dtype),
                        [-1]),
          tf.reshape(tf.convert_to_tensor(prev.objective_gradient, dtype),
                     tf.shape(x)),
          memory, iteration, prev.num_objective_evaluations,
          tf.reshape(prev.converged, [-1]), tf.reshape(prev.failed, [-1]),
          config, strategy)

    # Results of no evaluation hold a start point only (their values mean
    # nothing): the run starts there, as from `initial_position`.
    state = tf.cond(
        tf.equal(tf.cast(prev.num_objective_evaluations, tf.int32), 0),
        lambda: start(x, iteration), resumed)
  if trace_fn is None:
    state = run(objective, state, config, strategy, batch_shape)
    return to_results(state, position_shape, batch_shape)
  # At most `max_iterations` less those already made; under XLA, which
  # sizes the record when it compiles, `max_iterations` alone.
  capacity = config.max_iterations
  if not _context.in_xla_context():
    capacity -= _most_iterations(state)
  recorder = Recorder(
      lambda state: _traced(trace_fn, to_results(state, position_shape,
                                                 batch_shape)), capacity)
  state, trace = run(objective, state, config, strategy, batch_shape,
                     recorder)
  return to_results(state, position_shape, batch_shape), trace


def _traced(trace_fn, results):
  """`trace_fn(results)` as a nest of tensors, checked at trace time."""
  try:
    return tf.nest.map_structure(tf.convert_to_tensor, trace_fn(results))
  except (TypeError, ValueError) as error:
    raise TypeError(
        "`trace_fn` must be a callable taking an LBfgsOptimizerResults and "
        "returning a Tensor or a nest of Tensors; calling it raised: "
        f"{error}") from error
