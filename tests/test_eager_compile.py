"""Eager calls of the solvers run as a cached `tf.function` (`_eager`).

Checked for both solvers: the same results as the same call inside
`tf.function` and as the op-by-op loop; no retracing on repeated calls; one
warning and the op-by-op loop for an objective that cannot be traced; the
errors of bad arguments unchanged; the cache holds objectives weakly.
"""

import gc
import warnings
import weakref

import numpy as np
import pytest
import tensorflow as tf

import tf_extopt
from tf_extopt._solver import _eager
from tf_extopt import test_problems

DTYPES = (np.float32, np.float64)


def _rosenbrock_values(x):
  return tf.reduce_sum(100.0 * (x[..., 1:] - x[..., :-1] ** 2) ** 2
                       + (1.0 - x[..., :-1]) ** 2, axis=-1)


class Counted:
  """A Rosenbrock objective counting its Python calls (traces, in graphs)."""

  def __init__(self):
    self.calls = 0
    self._function = test_problems.value_and_gradients(_rosenbrock_values)

  def __call__(self, x):
    self.calls += 1
    return self._function(x)

  def method(self, x):
    return self(x)


def lbfgs(function, position=None, **kwargs):
  return tf_extopt.lbfgs_minimize(function, position, **kwargs)


def lbfgsb(function, position=None, **kwargs):
  return tf_extopt.lbfgsb_minimize(function, position, lower_bounds=-1.5,
                                   upper_bounds=[0.8, 2.0, 2.0, 2.0],
                                   **kwargs)


SOLVERS = {"lbfgs": lbfgs, "lbfgsb": lbfgsb}


def starts(dtype, size=3):
  return tf.constant(np.random.RandomState(0).uniform(-1.4, 0.7, (size, 4)),
                     dtype)


def numpy(results):
  return tf.nest.map_structure(lambda t: t.numpy(), results)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("solver", SOLVERS)
def test_eager_call_matches_function_and_op_by_op(solver, dtype):
  solve = SOLVERS[solver]
  function = Counted()
  x0 = starts(dtype)
  eager = numpy(solve(function, x0, tolerance=1e-5))
  traced = numpy(tf.function(lambda x: solve(function, x, tolerance=1e-5))(
      x0))
  with _eager.disabled():
    op_by_op = numpy(solve(function, x0, tolerance=1e-5))
  assert eager.converged.all()
  # Compiled eagerly or by the caller: the same graph, the same bits.
  for name in eager._fields:
    np.testing.assert_array_equal(getattr(eager, name), getattr(traced, name))
  # Eager kernels may round differently from graph ones; in float64 that
  # does not change the path, in float32 (near its noise floor at this
  # tolerance) the last iterations may differ.
  np.testing.assert_array_equal(eager.converged, op_by_op.converged)
  np.testing.assert_array_equal(eager.failed, op_by_op.failed)
  if dtype == np.float64:
    np.testing.assert_array_equal(eager.num_objective_evaluations,
                                  op_by_op.num_objective_evaluations)
    np.testing.assert_allclose(eager.position, op_by_op.position,
                               rtol=1e-12, atol=1e-12)
  else:
    np.testing.assert_allclose(eager.position, op_by_op.position,
                               atol=2e-3)


def test_repeated_calls_do_not_retrace():
  function = Counted()
  first = lbfgs(function, starts(np.float64), tolerance=1e-5)
  traced = function.calls
  # The loop traces the objective for the start and for the loop body; an
  # op-by-op loop would call it once per evaluation.
  assert 0 < traced < int(first.num_objective_evaluations)
  for tolerance, max_iterations, seed in ((1e-5, 50, 1), (1e-3, 7, 2),
                                          (0.0, 100, 3)):
    x0 = tf.constant(np.random.RandomState(seed).uniform(-1.0, 0.5, (3, 4)))
    lbfgs(function, x0, tolerance=tolerance, max_iterations=max_iterations,
          initial_inverse_hessian_estimate=None)
  lbfgs(function, starts(np.float64).numpy().tolist(), tolerance=1e-5)
  assert function.calls == traced
  # A new shape or dtype is a new trace, as for any tf.function.
  lbfgs(function, starts(np.float64, size=5), tolerance=1e-5)
  assert function.calls == 2 * traced
  # A new objective object traces once.
  other = Counted()
  for _ in range(2):
    lbfgs(other, starts(np.float64), tolerance=1e-5)
  assert other.calls == traced
  # A bound method is a new object on every access; it still traces once.
  holder = Counted()
  for _ in range(2):
    lbfgs(holder.method, starts(np.float64), tolerance=1e-5)
  assert holder.calls == traced


def test_new_bounds_and_options_do_not_retrace():
  function = Counted()
  tf_extopt.lbfgsb_minimize(function, starts(np.float64), -1.5, 0.8,
                            tolerance=1e-5)
  traced = function.calls
  assert traced > 0
  tf_extopt.lbfgsb_minimize(function, starts(np.float64),
                            [-1.0, -2.0, -1.0, None], np.float64(0.5),
                            tolerance=1e-3, max_iterations=9)
  assert function.calls == traced


@pytest.mark.parametrize("solver", SOLVERS)
def test_untraceable_objective_warns_once_and_runs_op_by_op(solver):
  solve = SOLVERS[solver]
  inner = Counted()

  def untraceable(x):
    if float(tf.reduce_max(x).numpy()) > 1e6:  # Python-side logic.
      raise AssertionError("never")
    return inner(x)

  x0 = starts(np.float64)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    first = numpy(solve(untraceable, x0, max_iterations=4))
    second = numpy(solve(untraceable, x0, max_iterations=4))
  messages = [str(w.message) for w in caught
              if issubclass(w.category, _eager.NotCompiledWarning)]
  assert len(messages) == 1
  assert "could not be traced" in messages[0]
  assert "numpy" in messages[0]
  assert "op by op" in messages[0]
  with _eager.disabled():
    expected = numpy(solve(inner, x0, max_iterations=4))
  for results in (first, second):
    np.testing.assert_array_equal(results.position, expected.position)
    np.testing.assert_array_equal(results.num_objective_evaluations,
                                  expected.num_objective_evaluations)


def _wrong_dtype(x):
  return tf.reduce_sum(x, axis=-1), tf.cast(x, tf.float32)


def _wrong_shape(x):
  return tf.reduce_sum(x), x


BAD_CALLS = {
    "tolerance": (lbfgs, dict(tolerance=-1.0)),
    "max_iterations": (lbfgs, dict(max_iterations=-2)),
    "num_correction_pairs": (lbfgs, dict(num_correction_pairs=0)),
    "estimate": (lbfgs, dict(initial_inverse_hessian_estimate=[1.0, 0.0, 1.0,
                                                               1.0])),
    "integer_start": (lbfgs, dict(position=tf.constant([[1, 2, 3, 4]]))),
    "both_starts": (lbfgs, dict(previous_optimizer_results="x")),
    "previous_type": (lbfgs, dict(position=None,
                                  previous_optimizer_results=(1, 2))),
    "wrong_dtype": (lbfgs, dict(function=_wrong_dtype)),
    "wrong_shape": (lbfgs, dict(function=_wrong_shape)),
    "stopping_condition": (lbfgs, dict(stopping_condition=3)),
    "bounds_order": (tf_extopt.lbfgsb_minimize,
                     dict(lower_bounds=1.0, upper_bounds=0.0)),
    "bounds_nan": (tf_extopt.lbfgsb_minimize,
                   dict(lower_bounds=[0.0, np.nan, 0.0, 0.0])),
    "bounds_shape": (tf_extopt.lbfgsb_minimize,
                     dict(upper_bounds=np.ones((2, 4)))),
}


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_arguments_raise_the_op_by_op_errors(case):
  solve, kwargs = BAD_CALLS[case]
  kwargs = dict(kwargs)
  function = kwargs.pop("function", test_problems.value_and_gradients(
      _rosenbrock_values))
  position = kwargs.pop("position", starts(np.float64))

  def error_of_call():
    with pytest.raises((TypeError, ValueError)) as info:
      solve(function, position, **kwargs)
    return info.value

  with warnings.catch_warnings():
    warnings.simplefilter("error", _eager.NotCompiledWarning)
    error = error_of_call()
  with _eager.disabled():
    expected = error_of_call()
  assert type(error) is type(expected)
  assert str(error) == str(expected)
  assert error.__context__ is None


@pytest.mark.parametrize("solver", SOLVERS)
def test_resumed_eager_run_equals_one_run(solver):
  solve = SOLVERS[solver]
  function = Counted()
  x0 = starts(np.float64)
  whole = numpy(solve(function, x0, tolerance=1e-8, max_iterations=12))
  half = solve(function, x0, tolerance=1e-8, max_iterations=5)
  traced = function.calls
  resumed = numpy(solve(function, previous_optimizer_results=half,
                        tolerance=1e-8, max_iterations=12))
  assert function.calls > traced  # The resume is a trace of its own ...
  traced = function.calls
  resumed_again = numpy(solve(function, previous_optimizer_results=half,
                              tolerance=1e-8, max_iterations=12))
  assert function.calls == traced  # ... but only one.
  np.testing.assert_array_equal(resumed.position, resumed_again.position)
  np.testing.assert_array_equal(resumed.num_iterations, whole.num_iterations)
  np.testing.assert_allclose(resumed.position, whole.position, rtol=1e-12)


def test_cache_holds_objectives_weakly():
  function = Counted()
  reference = weakref.ref(function)
  lbfgs(function, starts(np.float64), max_iterations=3)
  holder = Counted()
  holder_reference = weakref.ref(holder)
  lbfgsb(holder.method, starts(np.float64), max_iterations=3)
  del function, holder
  gc.collect()
  assert reference() is None
  assert holder_reference() is None


@pytest.mark.parametrize("solver", SOLVERS)
def test_run_functions_eagerly_runs_op_by_op(solver):
  function = Counted()
  tf.config.run_functions_eagerly(True)
  try:
    results = SOLVERS[solver](function, starts(np.float64), max_iterations=4)
  finally:
    tf.config.run_functions_eagerly(False)
  assert function.calls == int(results.num_objective_evaluations)
