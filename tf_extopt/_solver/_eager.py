"""Eager calls of the solvers, run as one cached `tf.function`.

Called eagerly, a solver's `tf.while_loop` runs op by op in Python: every trip
dispatches hundreds of small ops, which makes it many times slower per
iteration than the same call inside `tf.function` (benchmarks/README.md,
"Eager calls"). So an eager call is
traced once into a `tf.function` and that function is reused:

* It is cached per objective, held weakly (a model's function is not kept
  alive by the cache; a new objective object traces once), and per the
  static options (`num_correction_pairs`, `parallel_iterations`,
  `max_line_search_iterations`, `stopping_condition`, `compile_update`,
  `exact_line_search`, `trace_fn`, `name`, and which optional arguments are
  given). A bound method is cached per instance and method, since `obj.f`
  is a new object on every access.
* Tensor-valued options (the position, tolerances, `max_iterations`, bounds,
  the initial inverse Hessian, `previous_optimizer_results`) are passed as
  tensors, so new values never retrace; `tf.function` itself retraces for a
  new shape or dtype.
* The arguments are converted (and so checked) eagerly before the call. If
  that fails, or tracing fails, the solver runs eagerly as before, so a bad
  argument or a faulty objective raises exactly the error it always did.
  When the eager run succeeds where tracing failed, the objective is not
  traceable (it calls `.numpy()`, converts a tensor to a Python value, ...):
  one `NotCompiledWarning` says so, and later calls with that objective run
  eagerly without trying again.
* `tf.config.run_functions_eagerly(True)` turns all of this off (the solver
  then runs op by op, as everything else does).

Inside the traced function the solver sees a graph, so everything that
applies to a solver called in `tf.function` applies (`compile_update=None`
compiles the per-trip update for batches of 256 or more, Python side effects
of the objective happen only while tracing). `jit_compile` is not used: that
stays the caller's choice.
"""

import contextlib
import threading
import types
import warnings
import weakref

import tensorflow as tf

from tf_extopt import _validation

__all__ = ["NotCompiledWarning", "compiles_here", "disabled", "call",
           "common_tensors"]

# The options that select a different computation: part of the cache key.
_STATIC = ("num_correction_pairs", "parallel_iterations",
           "max_line_search_iterations", "stopping_condition",
           "compile_update", "exact_line_search", "trace_fn", "name")
_TOLERANCES = ("tolerance", "x_tolerance", "f_relative_tolerance",
               "f_absolute_tolerance")

# objective (or a bound method's instance) -> {key: tf.function or
# _NOT_TRACEABLE}.
_CACHE = weakref.WeakKeyDictionary()
_NOT_TRACEABLE = object()
_local = threading.local()


class NotCompiledWarning(RuntimeWarning):
  """An eager solver call ran op by op: its objective could not be traced."""


def compiles_here():
  """Whether a solver called now should run as a cached `tf.function`."""
  return (tf.executing_eagerly() and not tf.config.functions_run_eagerly()
          and not getattr(_local, "disabled", False))


@contextlib.contextmanager
def disabled():
  """Solver calls in this context (and thread) run op by op when eager."""
  previous = getattr(_local, "disabled", False)
  _local.disabled = True
  try:
    yield
  finally:
    _local.disabled = previous


def common_tensors(arguments):
  """Converts the tensor-valued options both solvers share.

  Args:
    arguments: dict of a solver's keyword arguments, as the caller gave them.

  Returns:
    `(position, tensors)`: the starting (or resumed) position as a tensor,
    and a dict of tensors to pass to the solver (absent optional arguments
    left out).

  Raises:
    Whatever the solver would raise for an argument it cannot take (not
    necessarily the same error); the caller then runs the solver eagerly.
  """
  initial_position = arguments["initial_position"]
  previous = arguments["previous_optimizer_results"]
  if (initial_position is None) == (previous is None):
    raise ValueError("exactly one of initial_position and "
                     "previous_optimizer_results")
  tensors = {}
  if previous is None:
    position = _validation.position(initial_position, "initial_position")
    tensors["initial_position"] = position
  else:
    position = _validation.position(previous.position, "position")
    tensors["previous_optimizer_results"] = previous
  for name in _TOLERANCES:
    tensors[name], _ = _validation.non_negative(arguments[name], name,
                                                position.dtype)
  tensors["max_iterations"], _ = _validation.non_negative(
      arguments["max_iterations"], "max_iterations", tf.int32)
  return position, tensors


def call(solver, function, arguments, convert):
  """Runs `solver(function, **arguments)` as a cached `tf.function`.

  Args:
    solver: the public solver function; called inside the trace (where it
      runs its graph path) or eagerly under `disabled()`.
    function: the caller's `value_and_gradients_function`.
    arguments: dict of the solver's other arguments as the caller gave them.
    convert: callable `arguments -> tensors dict`, converting and checking
      the tensor-valued options eagerly (see `common_tensors`).

  Returns:
    The solver's results.
  """

  def eager_loop():
    with disabled():
      return solver(function, **arguments)

  try:
    tensors = convert(arguments)
    static = {name: arguments[name] for name in _STATIC}
    key = (tuple(sorted(static.items())), tuple(sorted(tensors)))
    hash(key)
  except Exception:  # pylint: disable=broad-except
    key = None
  if key is None:
    # A bad argument: the solver raises the error its users know (outside
    # the `except` block, so that it is not chained to ours).
    return eager_loop()

  owner, method = function, None
  if isinstance(function, types.MethodType):
    owner, method = function.__self__, function.__func__
  key = (method,) + key
  try:
    entries = _CACHE.setdefault(owner, {})
  except TypeError:  # Not weakly referenceable or not hashable.
    entries = {}
  compiled = entries.get(key)
  if compiled is _NOT_TRACEABLE:
    return eager_loop()
  if compiled is None:
    compiled = _compile(solver, owner, method, static)
    entries[key] = compiled

  try:
    compiled.get_concrete_function(tensors)
    trace_error = None
  except Exception as error:  # pylint: disable=broad-except
    trace_error = error
  if trace_error is None:
    return compiled(tensors)
  # Outside the `except` block, so that an error of the eager run is not
  # reported as raised while handling the tracing error.
  entries.pop(key, None)
  results = eager_loop()
  entries[key] = _NOT_TRACEABLE
  warnings.warn(
      f"{solver.__name__} was called eagerly, but its "
      "`value_and_gradients_function` could not be traced into a "
      f"tf.function ({type(trace_error).__name__}: {trace_error}), so the "
      "optimisation loop ran op by op in Python, many times slower. "
      "To make it fast, compute the value and gradient with TensorFlow ops "
      "only (no `.numpy()`, `float(tensor)` or NumPy calls on tensors; "
      "`tf.py_function` for code that must run in Python), or call the "
      "solver inside your own `tf.function`. Further calls with this "
      "objective run eagerly without this warning.",
      NotCompiledWarning, stacklevel=3)
  return results


def _compile(solver, owner, method, static):
  """The `tf.function` running the solver, holding the objective weakly."""
  try:
    reference = weakref.ref(owner)
  except TypeError:  # Not cached either: a strong reference does no harm.
    reference = lambda: owner

  def solve(tensors):
    function = reference()
    if method is not None:
      function = method.__get__(function)
    # `initial_position` has no default (TFP's signature).
    return solver(function, **{"initial_position": None, **tensors},
                  **static)

  return tf.function(solve, autograph=False)
