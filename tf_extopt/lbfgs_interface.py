"""`LbfgsOptimizerInterface`: `lbfgs_minimize` over TF variables, on device.

Same constructor and `minimize` as `ScipyOptimizerInterface`, but the whole
optimization runs inside one compiled TensorFlow call (per chunk, see
`iterations_per_call`): no host round trip per evaluation, so it runs on GPU
and under `jit_compile=True`.

Deliberate differences from `ScipyOptimizerInterface`:

* The solve runs in compiled chunks of iterations, resumed through
  `previous_optimizer_results` (keeping the L-BFGS memory, so a chunked run
  follows the same path as one long run), and `step_callback` and
  `progress_callback` are called once per iteration, after the chunk that
  made it: the chunk records each iteration's point, loss, gradient and
  evaluation count on the device (`lbfgs_minimize`'s `trace_fn`), and the
  callbacks are replayed from that record, with no host round trip per
  iteration. A callback that raises `StopIteration` at iteration `k` ends
  the run at `k`'s point, even if the chunk went further. Chunks are as
  long as `iterations_per_call`, or by default as long as about a second
  of the run and a record of at most `TRACE_BUDGET` numbers allow. Under
  `jit_compile=True` and in graph mode (TF1 sessions) a chunk is one
  iteration by default instead (XLA would compile the record's size into
  each chunk; a session's graph is built once), and with
  `iterations_per_call` set, callbacks run once per chunk there.
  `loss_callback` gets the `fetches` evaluated once per chunk, at its end
  point. Not on every evaluation.
* `equalities`/`inequalities` raise `ValueError` (use
  `ScipyOptimizerInterface`). `var_to_bounds` switches the solver to
  `lbfgsb_minimize` (L-BFGS-B), with the same options except
  `initial_inverse_hessian_estimate`.
* The result's `nit`/`nfev` come from `lbfgs_minimize`'s counters, and
  `lbfgs_results` holds the final `LBfgsOptimizerResults`.
* The solver's state can be saved mid-run and resumed on the same iterates
  (`state`, `restore`; the interface is a `tf.train.Checkpoint`
  dependency). SciPy's state lives inside SciPy and cannot be.
* If a compiled chunk raises (say, an assertion in the loss), the variables
  get the best finite point the chunk evaluated, as
  `ScipyOptimizerInterface` does, not the chunk's start point.
* With a `tf.distribute` strategy (`distribute_strategy=`, or the one that
  created the variables), the solve still runs in one compiled call per
  chunk: the solver's state is the same on every worker, and each
  evaluation inside the loop is `strategy.run` of the per-replica loss and
  one all-reduce (see `_distribute`); `jit_compile=True` is refused over
  several replicas (XLA compiles for one device).
* A run costs one compiled loss-and-gradient call at the start point, then
  one compiled solver call (eager) or one `session.run` (graph mode) per
  chunk, then one assignment of the result to the variables.

Graph mode (`tf.compat.v1` sessions, also under `disable_v2_behavior()`)
and eager mode differ only inside the evaluator (`_evaluators`): the solve
is compiled through `evaluator.compile`, which in graph mode builds the ops
once, at construction (`minimize` adds none), re-evaluating the loss inside
the loop by importing the variables-to-loss part of the graph again.
"""

import inspect
import math
import time

import numpy as np
from scipy.optimize import OptimizeResult
import tensorflow as tf

from tf_extopt._interface import _base
from tf_extopt._interface import _checkpoint
from tf_extopt._interface import _run
from tf_extopt import _validation
from tf_extopt.lbfgs import lbfgs_minimize
from tf_extopt.lbfgsb import lbfgsb_minimize
from tf_extopt._results import LBfgsOptimizerResults

__all__ = ["LbfgsOptimizerInterface"]

_RESERVED = ("value_and_gradients_function", "initial_position",
             "previous_optimizer_results", "name")
_LBFGS_OPTIONS = tuple(
    p for p in inspect.signature(lbfgs_minimize).parameters
    if p not in _RESERVED)


def _defaults(solver):
  """The solver's own option defaults, so that none is retyped here."""
  return {name: p.default
          for name, p in inspect.signature(solver).parameters.items()}


# With callbacks, a chunk's record (one point and one gradient per
# iteration) holds at most this many numbers; and chunks after the first
# aim at this many seconds, so that progress shows while a long run goes.
TRACE_BUDGET = 2 ** 22
CHUNK_SECONDS = 1.0
# The first chunk, whose time is mostly tracing, is this long at most.
FIRST_CHUNK = 32

_LINE_SEARCH_FAILED = (
    "Failed: the line search could not decrease the loss along the search "
    "direction, nor along steepest descent, so this point (the last one it "
    "accepted) is not known to be a minimum. Check that the "
    "gradient is the gradient of the loss (a wrong sign, tf.stop_gradient, "
    "a non-differentiable loss), that the loss is the same function at "
    "every evaluation (Dropout or other randomness in training mode, data "
    "that changes, a noisy mixed_float16 loss), and that `tolerance` is "
    "not below what the loss's precision can resolve (float32).")


class _BestSeen:
  """The best finite point the compiled loop has evaluated, in variables.

  An exception inside a compiled chunk (a failing assertion or numerics
  check in the loss, an out-of-memory error) loses the loop's state, so the
  objective records its best point in two variables as it goes: their
  assignments have run before the failure, and the interface assigns that
  point instead of going back to the chunk's start.
  """

  def __init__(self, size):
    # Not in any collection: no Saver or initializer of the user's sees
    # them; `reset` initializes them before every run.
    self.x = tf.compat.v1.Variable(
        tf.zeros([size], tf.float64), trainable=False, collections=[],
        use_resource=True, name="best_x")
    self.f = tf.compat.v1.Variable(
        tf.constant(math.inf, tf.float64), trainable=False, collections=[],
        use_resource=True, name="best_f")

  def update(self, x, f):
    """Records float64 `x` with loss `f` if better; TF-level, in the loop."""
    better = (f < self.f) & tf.reduce_all(tf.math.is_finite(x))
    return tf.group(self.x.assign(tf.where(better, x, self.x)),
                    self.f.assign(tf.where(better, f, self.f)))

  def reset(self, x, f):
    """Starts tracking from `x` with loss `f`; returns `f` once assigned."""
    with tf.control_dependencies([self.x.assign(x), self.f.assign(f)]):
      return tf.identity(f)


def _iterate(results):
  """What the callbacks' replay needs of each iteration (a `trace_fn`)."""
  return (results.position, results.objective_value,
          results.objective_gradient, results.num_objective_evaluations)


class _Chunks:
  """How many iterations each compiled call of one `minimize` runs.

  Attributes:
    replay: whether chunks record their iterations for the callbacks.
  """

  def __init__(self, iterations_per_call, total, has_callbacks,
               can_replay, size, multiple=None):
    self.replay = has_callbacks and can_replay
    self._total = total
    # Chunks also end at every multiple of this iteration count (where a
    # caller saves the state, which exists only at chunk ends).
    self._multiple = multiple
    self._fixed = iterations_per_call
    if self.replay:
      # A point and a gradient per iteration.
      self._limit = max(1, TRACE_BUDGET // max(2 * size, 1))
    elif has_callbacks:
      self._limit = 1
    else:
      self._limit = max(total, 1)
    self._size = (iterations_per_call if iterations_per_call is not None
                  else min(self._limit, FIRST_CHUNK) if self.replay
                  else self._limit)
    self._first = True

  def next_target(self, done):
    """The iteration count the next call runs to."""
    target = min(done + self._size, self._total)
    if self._multiple:
      target = min(target, (done // self._multiple + 1) * self._multiple)
    return target

  def timed(self, iterations, seconds):
    """Sizes the next chunk (when not fixed) to about `CHUNK_SECONDS`."""
    first, self._first = self._first, False
    if (self._fixed is not None or not self.replay or first
        or iterations <= 0 or seconds <= 0):
      # The first call's time is mostly tracing: no measure of a chunk.
      return
    per_iteration = seconds / iterations
    self._size = int(min(self._limit,
                         max(1, CHUNK_SECONDS / per_iteration)))


class LbfgsOptimizerInterface(_base.VariableOptimizer,
                              tf.train.experimental.PythonState):
  """Minimizes a TF loss with `lbfgs_minimize`, entirely on the device.

  Example (TF2 / Keras):

  ```python
  opt = LbfgsOptimizerInterface(lambda: loss_fn(model(x), y), model,
                                max_iterations=200, jit_compile=True)
  result = opt.minimize()   # the model's variables now hold the optimum
  ```

  Example (TF1 graph):

  ```python
  loss = tf.reduce_sum(tf.square(vector - target))
  opt = LbfgsOptimizerInterface(loss, max_iterations=100)
  with tf.compat.v1.Session() as session:
    session.run(tf.compat.v1.global_variables_initializer())
    opt.minimize(session)   # one session.run per chunk
  ```

  Keyword options: any `lbfgs_minimize` option (`num_correction_pairs`,
  `tolerance`, `x_tolerance`, `f_relative_tolerance`, `f_absolute_tolerance`,
  `max_iterations` (default 50), `max_line_search_iterations`,
  `initial_inverse_hessian_estimate`, `parallel_iterations`,
  `stopping_condition`, `compile_update`, `exact_line_search`), with
  `lbfgs_minimize`'s defaults except `exact_line_search=False`: the line
  search stops at the first Wolfe point, as SciPy's L-BFGS-B does, about
  one evaluation per iteration, which is the faster way to a given loss on
  the models this interface is for (`benchmarks/time_to_loss.py`). Pass
  `exact_line_search=None` for `lbfgs_minimize`'s own rule (near-exact
  steps when the model has more weights than correction pairs: more
  progress per iteration, about two evaluations each), plus:

  * `iterations_per_call`: iterations per compiled call (chunk). Default:
    all iterations when `minimize` gets no callback; with callbacks, chunks
    of about a second (see above), or 1 under `jit_compile=True` and in
    graph mode.
  * `dtype`: the dtype L-BFGS works in. Default: the variables' dtype
    (float64 if they mix dtypes); pass `tf.float64` to solve a float32
    model in float64. Variables keep their own dtype.

  Saving and resuming a run: the solver's whole state is `state` (the
  `LBfgsOptimizerResults` of the last chunk end the callbacks have
  reached), and `restore(state)` makes the next `minimize` resume from it:
  same memory, counters and point, so the resumed run takes the iterates
  of an uninterrupted one, and `max_iterations` counts the iterations made
  before the save. The interface is also a `tf.train.Checkpoint`
  dependency, saved and restored with the model:

  ```python
  opt = LbfgsOptimizerInterface(loss, model, max_iterations=1000,
                                iterations_per_call=50)
  checkpoint = tf.train.Checkpoint(model=model, lbfgs=opt)
  manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=1)
  checkpoint.restore(manager.latest_checkpoint)  # None at the first start

  def save(progress):
    if progress.nit % 50 == 0:  # A chunk end: `opt.state` is at `nit`.
      manager.save()

  opt.minimize(progress_callback=save)
  ```

  The exact state exists only at chunk ends; inside a replayed chunk,
  `state` stays at the chunk's start until the callbacks reach its end (a
  save there resumes from the chunk's start, and redoes its iterations).
  To save at chosen iterations, make chunks end there with
  `iterations_per_call` (chunks end at its multiples), as above.
  """

  def __init__(self, loss, var_list=None, equalities=None, inequalities=None,
               var_to_bounds=None, *, jit_compile=False,
               distribute_strategy=None, **optimizer_kwargs):
    """See `ExternalOptimizerInterface.__init__`.

    Raises:
      ValueError: `equalities`/`inequalities` given (use
        `ScipyOptimizerInterface`), an unknown option, a `dtype` other than
        float32/float64, an `iterations_per_call` below 1 or a negative
        `max_iterations`.
      TypeError: `iterations_per_call` or `max_iterations` not an integer,
        `dtype` not a dtype, or as `ExternalOptimizerInterface.__init__`.
    """
    for name, value in (("equalities", equalities),
                        ("inequalities", inequalities)):
      if value:
        raise ValueError(
            "LbfgsOptimizerInterface does not take %s (L-BFGS is "
            "unconstrained); use ScipyOptimizerInterface with method='SLSQP' "
            "or 'trust-constr' for constrained problems." % name)
    super().__init__(loss, var_list, None, None, var_to_bounds,
                     jit_compile=jit_compile,
                     distribute_strategy=distribute_strategy,
                     **optimizer_kwargs)

  @classmethod
  def _on_problem(cls, problem, chunk_multiple=None, **optimizer_kwargs):
    """`VariableOptimizer._on_problem`, with chunks that also end at the
    multiples of `chunk_multiple` (`tf_extopt.keras.fit`'s backups)."""
    self = super()._on_problem(problem, **optimizer_kwargs)
    self._chunk_multiple = chunk_multiple
    return self

  def _check_options(self, optimizer_kwargs):
    unknown = sorted(set(optimizer_kwargs) - set(_LBFGS_OPTIONS)
                     - {"iterations_per_call", "dtype"})
    if unknown:
      raise ValueError(
          "LbfgsOptimizerInterface got unknown option(s) %s; expected "
          "lbfgs_minimize options (%s), iterations_per_call or dtype." %
          (", ".join(unknown), ", ".join(_LBFGS_OPTIONS)))
    if optimizer_kwargs.get("iterations_per_call") is not None:
      _validation.positive_int(optimizer_kwargs["iterations_per_call"],
                               "iterations_per_call")

  def _configure(self):
    optimizer_kwargs = self.optimizer_kwargs
    if (self._packed_bounds_arrays is not None
        and "initial_inverse_hessian_estimate" in optimizer_kwargs):
      raise ValueError(
          "initial_inverse_hessian_estimate cannot be combined with "
          "var_to_bounds: the bounded solver lbfgsb_minimize does not take "
          "it.")
    dtype = optimizer_kwargs.get("dtype")
    if dtype is None:
      dtypes = set(self._packer.dtypes)
      dtype = dtypes.pop() if len(dtypes) == 1 else tf.float64
      if dtype not in (tf.float32, tf.float64):
        dtype = tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype
    else:
      try:
        dtype = tf.as_dtype(dtype)
      except TypeError:
        raise TypeError("dtype must be None, tf.float32 or tf.float64; got "
                        "%r." % (dtype,)) from None
      if dtype not in (tf.float32, tf.float64):
        raise ValueError("dtype must be None, tf.float32 or tf.float64; got "
                         "%s." % dtype.name)
    self._dtype = dtype
    self._solver = (lbfgs_minimize if self._packed_bounds_arrays is None
                    else lbfgsb_minimize)
    defaults = _defaults(self._solver)
    self._options = {k: v for k, v in optimizer_kwargs.items()
                     if k in _LBFGS_OPTIONS}
    # Wall time is this interface's budget (it competes with
    # ScipyOptimizerInterface): Wolfe steps, not near-exact ones, unless
    # asked (see `lbfgs_minimize`'s `exact_line_search`).
    self._options.setdefault("exact_line_search", False)
    self._max_iterations = _validation.positive_int(
        self._options.pop("max_iterations", defaults["max_iterations"]),
        "max_iterations", minimum=0)
    self._num_pairs = self._options.get("num_correction_pairs",
                                        defaults["num_correction_pairs"])
    self._tolerance = self._options.get("tolerance", defaults["tolerance"])
    self._state = None  # See `state`.
    self._resume_from = None  # Set by `restore`, used by the next run.
    # Chunks end at the multiples of this count too (keras.fit's backups).
    self._chunk_multiple = None
    self._build()

  @property
  def dtype(self):
    """The dtype L-BFGS works in."""
    return self._dtype

  # --- The solver's state ----------------------------------------------------

  @property
  def state(self):
    """The solver's exact state, to save and `restore` later.

    An `LBfgsOptimizerResults` of NumPy arrays (position, loss and gradient
    there, the memory pairs, counters and flags) at the last chunk end the
    callbacks have reached, so never ahead of the point they last saw: the
    start point's (`num_objective_evaluations == 0`) as a run begins, then
    each chunk's end once its last iteration is reported, and the final
    results after the run (`result.lbfgs_results`, unless a callback
    stopped it). None before any run or `restore`. Read it in a callback
    or after `minimize`; `state.num_iterations` says which iteration it
    belongs to.
    """
    return self._state

  def restore(self, state):
    """Makes the next `minimize` resume from a saved `state`.

    That run starts at `state.position` with its memory, counters and
    flags, so it takes the iterates an uninterrupted run would have taken
    from there, and `max_iterations` counts the iterations `state` had
    already made (a state that had converged or used them all ends the run
    at once). Only the next `minimize` resumes; later ones start afresh
    from the variables, as without `restore`.

    Args:
      state: An `LBfgsOptimizerResults` (NumPy arrays or tensors), from
        `state` or from `lbfgs_minimize`/`lbfgsb_minimize` on this
        problem's packed variables, or None to cancel a pending restore.

    Raises:
      TypeError: `state` lacks the results' fields.
      ValueError: Its shapes or dtype do not fit this interface (another
        number of variables or correction pairs, another solver dtype), or
        it holds a batch.
    """
    if state is None:
      self._resume_from = None
      return
    missing = [f for f in LBfgsOptimizerResults._fields
               if not hasattr(state, f)]
    if missing:
      raise TypeError(
          "state must be an LBfgsOptimizerResults (or a namedtuple with its "
          "fields); got %s, which lacks %s." % (type(state).__name__,
                                               ", ".join(missing)))
    n, m = self._packer.size, self._num_pairs
    np_dtype = self._dtype.as_numpy_dtype
    expected = dict(converged=(), failed=(), num_iterations=(),
                    num_objective_evaluations=(), position=(n,),
                    objective_value=(), objective_gradient=(n,),
                    position_deltas=(m, n), gradient_deltas=(m, n))
    values = {}
    for name, shape in expected.items():
      value = np.asarray(getattr(state, name))
      if value.shape != shape:
        raise ValueError(
            "state.%s has shape %s; this interface expects %s (%d packed "
            "variable elements, num_correction_pairs=%d, no batch)." % (
                name, value.shape, shape, n, m))
      if name in ("position", "objective_value", "objective_gradient",
                  "position_deltas", "gradient_deltas"):
        if value.dtype != np_dtype:
          raise ValueError(
              "state.%s has dtype %s; this interface's solver works in %s "
              "(its dtype option)." % (name, value.dtype.name,
                                       self._dtype.name))
      values[name] = value
    values["converged"] = values["converged"].astype(bool)
    values["failed"] = values["failed"].astype(bool)
    for name in ("num_iterations", "num_objective_evaluations"):
      values[name] = values[name].astype(np.int32)
    self._state = self._resume_from = LBfgsOptimizerResults(**values)

  def _identity(self):
    """What a saved state must share with this interface to resume here."""
    identity = dict(
        solver=self._solver.__name__, dtype=self._dtype.name,
        num_correction_pairs=int(self._num_pairs),
        variables=[[list(shape), tf.as_dtype(dtype).name] for shape, dtype
                   in zip(self._packer.shapes, self._packer.dtypes)])
    if self._packed_bounds_arrays is not None:
      identity["bounds"] = _checkpoint.fingerprint(
          np.stack(self._packed_bounds_arrays))
    return identity

  def serialize(self):
    """`state` as bytes (for `tf.train.Checkpoint`; see `deserialize`).

    Holds the state's arrays and what it belongs to (the variables' shapes
    and dtypes, the solver, its dtype and memory size, the bounds); empty
    when there is no state.
    """
    if self._state is None:
      return b""
    return _checkpoint.encode(self._identity(),
                              _checkpoint.results_arrays(self._state))

  def deserialize(self, string_value):
    """`restore`s the state `serialize` saved (`tf.train.Checkpoint` calls it).

    Raises:
      ValueError: The state belongs to another problem or configuration
        (the message names what differs), or the bytes are damaged.
    """
    data = string_value.numpy() if hasattr(string_value, "numpy") else (
        string_value)
    if not data:
      self._state = self._resume_from = None
      return
    identity, arrays = _checkpoint.decode(data, "The saved L-BFGS state")
    identity.pop("format", None)
    _checkpoint.check_identity(
        identity, self._identity(), "The saved L-BFGS state",
        "Restore it into an interface over the same variables with the same "
        "num_correction_pairs, dtype and bounds.")
    self.restore(_checkpoint.results_from_arrays(arrays))

  def _build(self):
    """Compiles the resumed solve and the best-point bookkeeping, once.

    Through the evaluator: in graph mode the ops are built here (so
    `minimize` adds none); eagerly the solver is traced on first use.
    """
    n, m, dtype = self._packer.size, self._num_pairs, self._dtype
    with self._evaluator.scope(), tf.name_scope("lbfgs_interface"):
      self._best = _BestSeen(n)
    scalar_i = tf.TensorSpec([], tf.int32)
    x_spec = tf.TensorSpec([n], tf.float64)
    previous = LBfgsOptimizerResults(
        converged=tf.TensorSpec([], tf.bool),
        failed=tf.TensorSpec([], tf.bool),
        num_iterations=scalar_i, num_objective_evaluations=scalar_i,
        position=tf.TensorSpec([n], dtype),
        objective_value=tf.TensorSpec([], dtype),
        objective_gradient=tf.TensorSpec([n], dtype),
        position_deltas=tf.TensorSpec([m, n], dtype),
        gradient_deltas=tf.TensorSpec([m, n], dtype))
    compile_ = self._evaluator.compile
    # Only the resumed solve is compiled: every run, from its first
    # iteration, is a resumed run (see `_start_results`), which halves
    # the tracing cost (or the graph).
    self._resume = compile_(self._solve, [previous, scalar_i],
                            "lbfgs_interface")
    # The same solve, recording every iteration for the callbacks' replay:
    # only where compiling costs nothing until it is first called (eager),
    # and the record's size does not enter an XLA compilation.
    self._resume_traced = None
    if (self._evaluator.compiles_on_first_call
        and not self._problem.jit_compile):
      self._resume_traced = compile_(self._solve_traced,
                                     [previous, scalar_i],
                                     "lbfgs_interface_traced")
    self._reset_best = compile_(
        self._best.reset, [x_spec, tf.TensorSpec([], tf.float64)],
        "lbfgs_interface_reset", jit_compile=False)
    self._read_best = compile_(self._best.x.read_value, [],
                               "lbfgs_interface_best", jit_compile=False)

  # --- The objective ----------------------------------------------------------

  def _objective(self, x):
    x = tf.cast(x, tf.float64)
    # Not an explicit control dependency of the loss on the update: that
    # serializes the loop body and costs ~15% per evaluation on small models.
    loss, grad = self._evaluator.value_and_gradient_tf(
        x, observe=self._best.update)
    return tf.cast(loss, self._dtype), tf.cast(grad, self._dtype)

  def _solve(self, previous, max_iterations):
    """Resumes L-BFGS (or, with bounds, L-BFGS-B) from `previous`."""
    return self._resume_solver(previous, max_iterations)

  def _solve_traced(self, previous, max_iterations):
    """`_solve`, and the record of its iterations for the callbacks."""
    return self._resume_solver(previous, max_iterations, trace_fn=_iterate)

  def _resume_solver(self, previous, max_iterations, trace_fn=None):
    bounds = {}
    if self._packed_bounds_arrays is not None:
      lower, upper = (tf.constant(b, self._dtype)
                      for b in self._packed_bounds_arrays)
      bounds = dict(lower_bounds=lower, upper_bounds=upper)
    if trace_fn is not None:
      bounds["trace_fn"] = trace_fn
    return self._solver(self._objective, None,
                        previous_optimizer_results=previous,
                        max_iterations=max_iterations, **bounds,
                        **self._options)

  def _start_results(self, x0):
    """Results holding only the start point `x0`, not yet evaluated.

    Every run resumes from results, so that only the resumed solve is ever
    traced (tracing and first-call optimization of the solver loop cost
    seconds); results of no evaluation make the solver evaluate their
    point on its loop's first trip, as a fresh call does.
    """
    np_dtype = self._dtype.as_numpy_dtype
    m, n = self._num_pairs, self._packer.size
    zeros = np.zeros([n], np_dtype)
    return LBfgsOptimizerResults(
        converged=np.array(False), failed=np.array(False),
        num_iterations=np.array(0, np.int32),
        num_objective_evaluations=np.array(0, np.int32),
        position=np.asarray(x0, np_dtype), objective_value=np_dtype(np.nan),
        objective_gradient=zeros, position_deltas=np.zeros([m, n], np_dtype),
        gradient_deltas=np.zeros([m, n], np_dtype))

  # --- minimize -------------------------------------------------------------------

  def minimize(self, session=None, feed_dict=None, fetches=None,
               step_callback=None, loss_callback=None,
               progress_callback=None, **run_kwargs):
    """Minimizes the loss on the device and assigns the optimum.

    The arguments are those of `ScipyOptimizerInterface.minimize`, except
    that `step_callback(x)` and `progress_callback(progress)` are called
    once per iteration, replayed after the compiled chunk that made it
    (once per chunk, at its end, under `jit_compile=True` or in graph mode
    with `iterations_per_call` set), and `loss_callback(*fetched)` once per
    chunk, at its end point (see the class docstring). `progress` has the
    solver's own `fun`, `nit` and `nfev`: no evaluation is added. Raising
    `StopIteration` in any of them ends the run at the point it saw.

    Returns:
      A `scipy.optimize.OptimizeResult` with `x` (packed float64 point now
      held by the variables), `fun`, `success` (converged), `status` (0
      converged, 1 max_iterations reached, 2 failed, 99 stopped by a
      callback), `message`, `nit`, `nfev` and `lbfgs_results` (the final
      `LBfgsOptimizerResults`, as NumPy values).

    Raises:
      TypeError: As `ScipyOptimizerInterface.minimize`.
      ValueError: As `ScipyOptimizerInterface.minimize`.
      Exception: Any exception raised while running (including
        `KeyboardInterrupt`) propagates after the best finite point
        evaluated so far (at least the last completed chunk's point, or the
        initial point) has been assigned to the variables.
    """
    return super().minimize(session, feed_dict, fetches, step_callback,
                            loss_callback, progress_callback, **run_kwargs)

  def _optimize(self, state):
    """The chunk loop, for `minimize`'s template (`_run.run`)."""
    run = state.run
    total = self._max_iterations
    chunks = _Chunks(self.optimizer_kwargs.get("iterations_per_call"), total,
                     state.has_callbacks, self._resume_traced is not None,
                     self._packer.size, self._chunk_multiple)
    results, self._resume_from = self._resume_from, None
    if results is None:
      results = self._start_results(state.best.x)
    else:
      # A restored state: its point is where the run stands (and what the
      # variables hold if it is cut short before its first chunk ends).
      x = results.position.astype(np.float64)
      if int(results.num_objective_evaluations) > 0:
        state.best.set(x, float(results.objective_value),
                       results.objective_gradient)
      else:
        state.best.set(x, math.inf)  # A start point, not yet evaluated.
      run.assign(x)
    self._state = results
    self._reset_best(run, state.best.x, math.inf)
    # From here on, a failure assigns the best point the loop evaluated.
    state.recover = lambda: self._read_best(run)
    done = int(results.num_iterations)
    while True:
      target = chunks.next_target(done)
      start = time.perf_counter()
      if chunks.replay:
        outputs, record = self._resume_traced(run, results, np.int32(target))
      else:
        outputs, record = self._resume(run, results, np.int32(target)), None
      results = LBfgsOptimizerResults(*map(np.asarray, outputs))
      previous_done, done = done, int(results.num_iterations)
      chunks.timed(done - previous_done, time.perf_counter() - start)
      if record is not None:
        self._replay(state, record, previous_done, results)
      else:
        self._state = results
      # The chunk's end point: what the variables get if the run stops now.
      state.best.set(results.position, float(results.objective_value),
                     results.objective_gradient)
      state.stop_fields["lbfgs_results"] = results
      if record is None and state.has_callbacks and done > previous_done:
        # Without a record, callbacks run once per chunk that made progress.
        run.assign(state.best.x)
        state.iteration(state.best.x.copy(), float(results.objective_value),
                        nit=done, nfev=int(results.num_objective_evaluations))
      if state.loss_callback is not None and done > previous_done:
        _run.call_user(state.loss_callback, *run.fetch(state.best.x))
      if (bool(results.converged) or bool(results.failed) or done >= total
          # No progress possible in this chunk: stop too.
          or target > done):
        break
    return self._result(results, total)

  def _replay(self, state, record, previous_done, results):
    """Calls the per-iteration callbacks for each iteration of a chunk.

    Before each iteration's callbacks the variables get its point, as they
    would in a run of one iteration per call, and so does the best point:
    a callback that stops the run there (`StopIteration`) or raises leaves
    the variables at the point it saw. A stopped result carries no
    `lbfgs_results`, which describe the chunk's end. `state` becomes the
    chunk's end `results` just before its last iteration is reported.
    """
    positions, values, gradients, evaluations = (np.asarray(r)
                                                 for r in record)
    state.stop_fields.pop("lbfgs_results", None)
    recover, state.recover = state.recover, None
    if not len(values):
      self._state = results
    for k in range(len(values)):
      if k == len(values) - 1:
        self._state = results
      x = positions[k].astype(np.float64)
      state.best.set(x, float(values[k]), gradients[k])
      state.run.assign(x)
      state.iteration(x, float(values[k]), nit=previous_done + k + 1,
                      nfev=int(evaluations[k]))
    state.recover = recover

  @staticmethod
  def _result(r, max_iterations):
    """The `OptimizeResult` of a run that ended with results `r`."""
    fun = float(r.objective_value)
    if bool(r.converged):
      status, message = _run.STATUS_CONVERGED, "Converged."
    elif bool(r.failed):
      # A failed run stays at its last accepted point: finite unless it is
      # the start point.
      finite = (math.isfinite(fun)
                and bool(np.isfinite(r.objective_gradient).all()))
      status, message = _run.STATUS_FAILED, (
          _LINE_SEARCH_FAILED if finite else
          "Failed: the loss or gradient is not finite at the start point.")
    else:
      status, message = _run.STATUS_MAX_ITERATIONS, (
          "Stopped after max_iterations=%d iterations." % max_iterations)
    return OptimizeResult(
        x=r.position.astype(np.float64), fun=fun,
        jac=r.objective_gradient.astype(np.float64),
        success=bool(r.converged), status=status, message=message,
        nit=int(r.num_iterations), nfev=int(r.num_objective_evaluations),
        lbfgs_results=r)
