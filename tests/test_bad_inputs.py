"""Bad and hostile inputs x the public entry points: clear errors, honest results.

Every row asserts either a specific exception type whose message names the
argument, or a result whose flags (`converged`/`failed`, `success`/`status`)
match the point it returns. Solver rows run eagerly, in `tf.function` and
under `jit_compile=True`; interface rows run with the TF2 evaluator (loss
and gradient compiled in a `tf.function`, also with `jit_compile=True` where
the row allows it) and in a TF1 graph session.
"""

import collections
import math

import keras
import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf
import tensorflow_probability as tfp

import tf_extopt
from tf_extopt import ExternalOptimizerInterface
from tf_extopt import LbfgsOptimizerInterface
from tf_extopt import ScipyOptimizerInterface
from tests import _solver_regimes
from tests._scipy_interface_helpers import graph_session
from tests._scipy_interface_helpers import rosen_tf

v1 = tf.compat.v1

REGIMES = _solver_regimes.REGIMES
DTYPES = (np.float32, np.float64)


def _bowl(x):
  return tf.reduce_sum(tf.square(x - 1.), axis=-1), 2. * (x - 1.)


def _lbfgsb(fn, x0, **kwargs):
  kwargs.setdefault("lower_bounds", -10.)
  kwargs.setdefault("upper_bounds", 10.)
  return tf_extopt.lbfgsb_minimize(fn, x0, **kwargs)


SOLVERS = {"lbfgs": tf_extopt.lbfgs_minimize, "lbfgsb": _lbfgsb}


def _run(regime, solver, fn, x0, **kwargs):
  """Calls `solver` in `regime`; returns NumPy results."""
  starts = () if x0 is None else (x0,)
  return _solver_regimes.run(
      regime, lambda *x: SOLVERS[solver](fn, *(x or (None,)), **kwargs),
      *starts)


# --- Solvers: errors ------------------------------------------------------------

_Fake = collections.namedtuple("LBfgsOptimizerResults", ["position"])

# (id, solver kwargs, value_and_gradients_function, start, error, match).
# The start's dtype is float64 unless the row gives one.
SOLVER_ERRORS = [
    ("max_iterations_float", {"max_iterations": 2.5}, None, None, TypeError,
     r"`max_iterations` must be an integer.*2\.5"),
    ("max_iterations_str", {"max_iterations": "10"}, None, None, TypeError,
     r"`max_iterations` must be an integer.*'10'"),
    ("max_iterations_negative", {"max_iterations": -1}, None, None,
     ValueError, "`max_iterations` must be non-negative"),
    ("tolerance_str", {"tolerance": "tight"}, None, None, TypeError,
     "`tolerance` must be a real number.*'tight'"),
    ("tolerance_none", {"tolerance": None}, None, None, TypeError,
     "`tolerance` must be a real number.*None"),
    ("f_relative_tolerance_bool", {"f_relative_tolerance": True}, None, None,
     TypeError, "`f_relative_tolerance` must be a real number"),
    ("x_tolerance_vector", {"x_tolerance": np.array([1e-3, 1e-3])}, None,
     None, ValueError, "`x_tolerance` must be a scalar"),
    ("num_correction_pairs_zero", {"num_correction_pairs": 0}, None, None,
     ValueError, "`num_correction_pairs` must be >= 1"),
    ("num_correction_pairs_float", {"num_correction_pairs": 2.5}, None,
     None, TypeError, "`num_correction_pairs` must be a Python integer"),
    ("parallel_iterations_str", {"parallel_iterations": "1"}, None, None,
     TypeError, "`parallel_iterations` must be a Python integer"),
    ("max_line_search_iterations_zero", {"max_line_search_iterations": 0},
     None, None, ValueError, "`max_line_search_iterations` must be >= 1"),
    ("stopping_condition_str", {"stopping_condition": "converged_all"}, None,
     None, TypeError, "`stopping_condition` must be callable"),
    ("stopping_condition_arity", {"stopping_condition": lambda c: c}, None,
     None, TypeError,
     r"`stopping_condition` must be a callable \(converged, failed\).*"
     "positional argument"),
    ("stopping_condition_not_bool",
     {"stopping_condition": lambda c, f: tf.constant(1.)}, None, None,
     TypeError, "`stopping_condition` must be .*returned a float32 Tensor"),
    ("compile_update_str", {"compile_update": "yes"}, None, None, TypeError,
     "`compile_update` must be None"),
    ("position_bfloat16", {}, None, tf.constant([3., 4.], tf.bfloat16),
     TypeError, "`initial_position` must have a floating dtype.*float32 or float64.*"
     "bfloat16"),
    ("position_float16", {}, None, np.array([3., 4.], np.float16),
     TypeError, "`initial_position` must have a floating dtype.*float32 or float64.*"
     "float16"),
    ("position_int", {}, None, np.array([3, 4]), TypeError,
     "`initial_position` must have a floating dtype.*float32 or float64.*"
     "int64"),
    ("position_scalar", {}, None, np.float64(3.), ValueError,
     "`initial_position` must have shape"),
    ("function_not_callable", {}, "not a function", None, TypeError,
     "`value_and_gradients_function` must be callable"),
    ("function_gradient_none", {}, lambda x: (tf.reduce_sum(x), None), None,
     TypeError, "returned a gradient of None.*does not depend on the "
     "position"),
    ("function_not_a_pair", {}, lambda x: tf.reduce_sum(x), None, TypeError,
     r"`value_and_gradients_function` must return a pair"),
    ("function_wrong_dtype", {},
     lambda x: (tf.reduce_sum(tf.cast(x, tf.float32)), tf.cast(x, tf.float32)),
     None, TypeError, "returned a value of dtype float32; expected float64"),
    ("previous_results_wrong_type",
     {"previous_optimizer_results": _Fake(np.zeros(2))}, None, "none",
     TypeError, r"`previous_optimizer_results` must be an "
     r"LBfgsOptimizerResults.*TFP's.*got \S*test_bad_inputs\."
     "LBfgsOptimizerResults"),
    ("neither_start_nor_previous", {}, None, "none", ValueError,
     "Exactly one of `initial_position` and `previous_optimizer_results`"),
]
LBFGSB_ERRORS = [
    ("bounds_crossed", {"lower_bounds": 1., "upper_bounds": 0.}, ValueError,
     "lower_bounds"),
    ("bounds_str", {"lower_bounds": "low"}, TypeError, "lower_bounds"),
]


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("solver", sorted(SOLVERS))
@pytest.mark.parametrize("row", SOLVER_ERRORS, ids=[r[0] for r in
                                                     SOLVER_ERRORS])
def test_solver_errors(row, solver, regime):
  _, kwargs, fn, start, error, match = row
  if isinstance(start, str):
    start = None
  elif start is None:
    start = np.array([3., 4.])
  if regime != "eager" and isinstance(start, tf.Tensor):
    start = start.numpy()
  with pytest.raises(error, match=match):
    _run(regime, solver, _bowl if fn is None else fn, start, **kwargs)


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("row", LBFGSB_ERRORS, ids=[r[0] for r in
                                                     LBFGSB_ERRORS])
def test_lbfgsb_bound_errors(row, regime):
  _, kwargs, error, match = row
  with pytest.raises(error, match=match):
    _run(regime, "lbfgsb", _bowl, np.array([3., 4.]), **kwargs)


@pytest.mark.parametrize("regime", REGIMES)
def test_bad_inverse_hessian_estimate(regime):
  with pytest.raises(ValueError, match="initial_inverse_hessian_estimate"):
    _run(regime, "lbfgs", _bowl, np.array([3., 4.]),
         initial_inverse_hessian_estimate=np.array([1., -1.]))


# --- Solvers: honest results ------------------------------------------------------


@pytest.fixture(scope="module")
def tfp_empty_results():
  """TFP's results on empty batches and empty problems, the reference."""
  return {shape: tf.nest.map_structure(np.asarray, tfp.optimizer.lbfgs_minimize(
      _bowl, tf.zeros(shape, tf.float64))) for shape in [(0, 3), (0,), (3, 0)]}


def _compiled_cases(dtypes=(np.float64,)):
  """`(solver, regime, dtype)` cases; compiling L-BFGS-B or a second dtype
  costs tens of seconds on a busy CPU, so those compiled cases are slow."""
  cases = []
  for solver in sorted(SOLVERS):
    for regime in REGIMES:
      for dtype in dtypes:
        slow = regime != "eager" and (solver == "lbfgsb"
                                      or dtype != np.float64)
        cases.append(pytest.param(
            solver, regime, dtype,
            id="%s-%s-%s" % (solver, regime, np.dtype(dtype).name),
            marks=[pytest.mark.slow] if slow else []))
  return cases


@pytest.mark.parametrize("solver, regime, dtype", _compiled_cases(DTYPES))
@pytest.mark.parametrize("shape", [(0, 3), (0,), (3, 0)],
                         ids=["empty_batch", "n0", "batch_of_n0"])
def test_empty_batches_and_problems_match_tfp(shape, solver, regime, dtype,
                                              tfp_empty_results):
  results = _run(regime, solver, _bowl, np.zeros(shape, dtype))
  expected = tfp_empty_results[shape]
  assert results.num_iterations == expected.num_iterations == 0
  np.testing.assert_array_equal(results.converged, expected.converged)
  np.testing.assert_array_equal(results.failed, expected.failed)
  assert results.position.shape == shape
  assert results.objective_value.shape == expected.objective_value.shape


@pytest.mark.parametrize("solver, regime, dtype", _compiled_cases())
def test_non_finite_start_fails_where_it_started(solver, regime, dtype):
  del dtype  # float64
  start = np.array([[3., 4.], [np.nan, 1.]])
  results = _run(regime, solver, _bowl, start, tolerance=1e-6)
  np.testing.assert_array_equal(results.failed, [False, True])
  np.testing.assert_array_equal(results.converged, [True, False])
  np.testing.assert_array_equal(results.position[1], start[1])
  np.testing.assert_allclose(results.position[0], [1., 1.], atol=1e-6)


def _wrong_sign(x):
  """A bowl whose 'gradient' points uphill: no line search can decrease it."""
  return tf.reduce_sum(tf.square(x - 1.), axis=-1), -2. * (x - 1.)


@pytest.fixture(scope="module")
def tfp_wrong_sign_results():
  return tf.nest.map_structure(np.asarray, tf.function(
      lambda x: tfp.optimizer.lbfgs_minimize(_wrong_sign, x))(
          tf.zeros([3], tf.float64)))


@pytest.mark.parametrize("solver, regime, dtype", _compiled_cases())
def test_failed_line_search_is_a_failure_as_in_tfp(solver, regime, dtype,
                                                   tfp_wrong_sign_results):
  """A search that finds no decrease fails (TFP's verdict on the same
  input) and keeps the best point, here the start: never 'converged'."""
  del dtype  # float64
  results = _run(regime, solver, _wrong_sign, np.zeros(3))
  expected = tfp_wrong_sign_results
  assert expected.failed and not expected.converged
  assert results.failed and not results.converged
  np.testing.assert_array_equal(results.position, np.zeros(3))
  assert results.objective_value == 3.
  np.testing.assert_array_equal(results.objective_gradient, [2., 2., 2.])


def _coarse_bowl(x):
  """A bowl whose value is rounded to float16 (a loss in mixed precision,
  say) while its gradient is exact: near the minimum the values of nearby
  points are equal."""
  value = 10. + tf.reduce_sum(tf.square(x - 1.), axis=-1)
  return tf.cast(tf.cast(value, tf.float16), x.dtype), 2. * (x - 1.)


@pytest.mark.parametrize("solver, regime, dtype", _compiled_cases())
def test_coarse_loss_is_never_converged_with_a_large_gradient(solver, regime,
                                                              dtype):
  """Below float16's resolution (0.008 at 10) no decrease can be seen. A
  search that gave up used to fall back on a point of equal value, and the
  zero-tolerance 'f did not change' test then reported convergence with a
  gradient of ~0.1. Now such a point is no progress: the run goes on by
  the gradient (approximate Wolfe) or fails, and never claims convergence
  with a gradient above `tolerance`."""
  del dtype  # float64
  start = np.array([[3., -2., 0.5], [1.5, 1.5, 1.5]])
  results = _run(regime, solver, _coarse_bowl, start, tolerance=1e-6)
  gradient = np.max(np.abs(results.objective_gradient), axis=-1)
  assert not np.any(results.converged & (gradient > 1e-6))
  assert not np.any(results.converged & results.failed)
  # The exact gradient still leads to the minimum.
  np.testing.assert_allclose(results.position, np.ones_like(start),
                             atol=1e-3)


def _rosen_value_and_gradient(x):
  return tfp.math.value_and_gradient(rosen_tf, x)


@pytest.fixture(scope="module")
def tfp_partial_results():
  """TFP's own results after 3 iterations on Rosenbrock (compiled once)."""
  return tf.function(lambda x: tfp.optimizer.lbfgs_minimize(
      _rosen_value_and_gradient, x, max_iterations=3))(
          tf.constant([-1.2, 1.0], tf.float64))


@pytest.mark.parametrize("solver, regime, dtype", _compiled_cases())
def test_resumes_from_tfp_results_namedtuple(solver, regime, dtype,
                                             tfp_partial_results):
  del dtype  # float64
  partial = tfp_partial_results
  assert not isinstance(partial, tf_extopt.LBfgsOptimizerResults)
  results = _run(regime, solver, _rosen_value_and_gradient, None,
                 previous_optimizer_results=partial, tolerance=1e-6,
                 max_iterations=200)
  assert results.converged and not results.failed
  assert results.num_iterations > int(partial.num_iterations)
  np.testing.assert_allclose(results.position, [1., 1.], atol=1e-5)


# --- Interfaces: loss that does not depend on the variables ---------------------

INTERFACES = [
    ("scipy_lbfgsb", ScipyOptimizerInterface, {}),
    ("scipy_nelder_mead", ScipyOptimizerInterface, {"method": "Nelder-Mead"}),
    ("lbfgs", LbfgsOptimizerInterface, {}),
]
_NO_DEPENDENCE = "loss does not depend on any variable in var_list"


@pytest.mark.parametrize("jit_compile", [False, True], ids=["tf_function",
                                                            "xla"])
@pytest.mark.parametrize("row", INTERFACES, ids=[r[0] for r in INTERFACES])
def test_loss_not_depending_on_var_list_eager(row, jit_compile):
  _, cls, kwargs = row
  x = tf.Variable([1., 2.], dtype=tf.float64)
  other = tf.Variable([3.], dtype=tf.float64)
  optimizer = cls(lambda: tf.reduce_sum(tf.square(other)), [x],
                  jit_compile=jit_compile, **kwargs)
  with pytest.raises(ValueError, match=_NO_DEPENDENCE):
    optimizer.minimize()
  np.testing.assert_array_equal(x.numpy(), [1., 2.])


@pytest.mark.parametrize("row", INTERFACES, ids=[r[0] for r in INTERFACES])
def test_loss_not_depending_on_var_list_graph(row):
  _, cls, kwargs = row
  with graph_session():
    x = v1.Variable([1., 2.], dtype=tf.float64)
    other = v1.Variable([3.], dtype=tf.float64)
    with pytest.raises(ValueError, match=_NO_DEPENDENCE):
      cls(tf.reduce_sum(tf.square(other)), [x], **kwargs)


def test_partly_unused_variables_are_fine():
  x = tf.Variable([1., 2.], dtype=tf.float64)
  unused = tf.Variable([3.], dtype=tf.float64)
  result = ScipyOptimizerInterface(lambda: tf.reduce_sum(tf.square(x - 5.)),
                                   [x, unused]).minimize()
  assert result.success
  np.testing.assert_allclose(x.numpy(), [5., 5.], atol=1e-6)
  assert unused.numpy()[0] == 3.


# --- Interfaces: an optimizer ending on a non-finite point ------------------------


def _infinite_after(count, x, calls):
  """Rosenbrock until `count` evaluations, then +inf with a zero gradient."""

  def loss():
    call = calls.assign_add(1)
    value = rosen_tf(x)
    return tf.where(call > count, tf.stop_gradient(
        tf.constant(np.inf, tf.float64) + 0. * value), value)
  return loss


def _check_honest_replacement(result, x_now):
  """The result says it was replaced, and x/fun/jac belong together."""
  assert not result.success
  assert result.status == 98
  assert "best finite point" in result.message
  np.testing.assert_array_equal(result.x, x_now)
  fun, jac = scipy.optimize.rosen(x_now), scipy.optimize.rosen_der(x_now)
  np.testing.assert_allclose(result.fun, fun, rtol=1e-12)
  np.testing.assert_allclose(result.jac, jac, rtol=1e-10)
  assert "hess_inv" not in result


def test_scipy_infinite_end_is_not_a_success_eager():
  x = tf.Variable([-1.2, 1.], dtype=tf.float64)
  calls = tf.Variable(0)
  result = ScipyOptimizerInterface(_infinite_after(6, x, calls),
                                   [x]).minimize()
  assert result.optimizer_status == 0  # SciPy itself claimed convergence.
  _check_honest_replacement(result, x.numpy())
  assert result.fun < rosen_tf(tf.constant([-1.2, 1.], tf.float64)).numpy()


def test_scipy_infinite_end_is_not_a_success_graph():
  with graph_session() as (_, session):
    x = v1.Variable([-1.2, 1.], dtype=tf.float64, use_resource=True)
    calls = v1.Variable(0, use_resource=True)
    loss = _infinite_after(6, x, calls)()
    optimizer = ScipyOptimizerInterface(loss, [x])
    session.run(v1.global_variables_initializer())
    result = optimizer.minimize(session)
    _check_honest_replacement(result, session.run(x))


class _NanPoint(ExternalOptimizerInterface):
  """Evaluates two points, then returns a NaN point."""

  def _minimize(self, initial_val, loss_grad_func, **unused_kwargs):
    loss_grad_func(initial_val)
    loss_grad_func(0.5 * initial_val)
    return np.full_like(initial_val, np.nan)


def test_subclass_returning_nan_point_is_not_a_success():
  x = tf.Variable([-1.2, 1.], dtype=tf.float64)
  result = _NanPoint(lambda: rosen_tf(x), [x]).minimize()
  _check_honest_replacement(result, x.numpy())
  np.testing.assert_array_equal(result.x, [-0.6, 0.5])


def test_no_finite_loss_at_all_keeps_start():
  x = tf.Variable([1., 2.], dtype=tf.float64)
  result = ScipyOptimizerInterface(
      lambda: tf.reduce_sum(x) * np.nan, [x]).minimize()
  assert not result.success and result.status == 98
  assert "initial point is kept" in result.message
  np.testing.assert_array_equal(x.numpy(), [1., 2.])


# --- LbfgsOptimizerInterface keeps the best point when a run fails ----------------


def _failing_loss(x, calls, history, fail_at):
  """Rosenbrock; records each value, and raises at evaluation `fail_at`."""

  def loss():
    call = calls.assign_add(1)
    with tf.control_dependencies([tf.debugging.assert_less(
        call, fail_at, message="evaluation limit")]):
      value = rosen_tf(x)
    index = tf.clip_by_value(call, 0, history.shape[0] - 1)
    with tf.control_dependencies([history.scatter_nd_update([[index]],
                                                            [value])]):
      return tf.identity(value)
  return loss


def test_lbfgs_interface_failure_keeps_best_point_eager():
  start = np.full(4, -1.2)
  x = tf.Variable(start)
  calls = tf.Variable(0)
  history = tf.Variable(tf.fill([64], tf.constant(np.inf, tf.float64)))
  optimizer = LbfgsOptimizerInterface(_failing_loss(x, calls, history, 40),
                                      [x], max_iterations=100)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="evaluation limit"):
    optimizer.minimize()
  best = history.numpy().min()
  assert best < scipy.optimize.rosen(start) / 100  # Real progress was made.
  np.testing.assert_allclose(scipy.optimize.rosen(x.numpy()), best,
                             rtol=1e-12)
  # The next run starts from there and tracks afresh.
  calls.assign(-10**6)
  assert optimizer.minimize().fun <= best


def _nan_below(threshold, x):
  """Rosenbrock, but CheckNumerics fails wherever it is below `threshold`.

  Without control dependencies, which the graph-mode loop does not copy.
  """
  value = rosen_tf(x)
  return tf.debugging.check_numerics(
      tf.where(value < threshold, tf.constant(np.nan, tf.float64), value),
      "below threshold")


def test_lbfgs_interface_failure_keeps_best_point_graph():
  start, threshold = np.full(4, -1.2), 5.
  eager_x = tf.Variable(start)
  with pytest.raises(tf.errors.InvalidArgumentError, match="below threshold"):
    LbfgsOptimizerInterface(lambda: _nan_below(threshold, eager_x),
                            [eager_x], max_iterations=100).minimize()
  eager_best = eager_x.numpy()
  assert threshold <= scipy.optimize.rosen(eager_best) < (
      scipy.optimize.rosen(start) / 100)
  with graph_session() as (_, session):
    x = v1.Variable(start, use_resource=True)
    optimizer = LbfgsOptimizerInterface(_nan_below(threshold, x), [x],
                                        max_iterations=100)
    session.run(x.initializer)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="below threshold"):
      optimizer.minimize(session)
    # The same evaluations as eagerly, so the same best point.
    np.testing.assert_allclose(session.run(x), eager_best, rtol=1e-12)


# --- Interfaces: argument errors --------------------------------------------------

INTERFACE_ERRORS = [
    # The interfaces raise TypeError for a wrong type, as the core does.
    ("lbfgs_max_iterations_float", LbfgsOptimizerInterface,
     {"max_iterations": 2.5}, TypeError,
     r"`max_iterations` must be a Python integer >= 0; got 2\.5"),
    ("lbfgs_max_iterations_str", LbfgsOptimizerInterface,
     {"max_iterations": "10"}, TypeError,
     "`max_iterations` must be a Python integer >= 0; got '10'"),
    ("lbfgs_iterations_per_call_float", LbfgsOptimizerInterface,
     {"iterations_per_call": 1.5}, TypeError,
     r"`iterations_per_call` must be a Python integer >= 1; got 1\.5"),
    ("lbfgs_dtype_bfloat16", LbfgsOptimizerInterface,
     {"dtype": tf.bfloat16}, ValueError,
     "dtype must be None, tf.float32 or tf.float64"),
    ("lbfgs_dtype_not_a_dtype", LbfgsOptimizerInterface,
     {"dtype": "nope"}, TypeError,
     "dtype must be None, tf.float32 or tf.float64; got 'nope'"),
    ("scipy_options_list", ScipyOptimizerInterface, {"options": [1]},
     TypeError, "options must be a dict; got list"),
    ("scipy_method_int", ScipyOptimizerInterface, {"method": 3},
     TypeError, "method must be a SciPy method name or a callable; got int"),
    ("scipy_unknown_method", ScipyOptimizerInterface, {"method": "nope"},
     ValueError, "method 'nope' is not a scipy.optimize.minimize method"),
    ("scipy_bounds_kwarg", ScipyOptimizerInterface, {"bounds": [(0, 1)]},
     ValueError, "var_to_bounds"),
    # Refused when built, not at the first minimize (SciPy's TypeError).
    ("scipy_unknown_keyword", ScipyOptimizerInterface, {"epochs": 3},
     ValueError, "ScipyOptimizerInterface got unknown option\\(s\\) epochs; "
     "expected scipy.optimize.minimize keywords \\(method, options, tol"),
]


@pytest.mark.parametrize("row", INTERFACE_ERRORS,
                         ids=[r[0] for r in INTERFACE_ERRORS])
def test_interface_option_errors(row):
  _, cls, kwargs, error, match = row
  x = tf.Variable([1., 2.])
  with pytest.raises(error, match=match):
    cls(lambda: tf.reduce_sum(x * x), [x], **kwargs)


BOTH_INTERFACES = (ScipyOptimizerInterface, LbfgsOptimizerInterface)

# (id, interfaces, constructor kwargs from the variable x, minimize kwargs,
# message): a wrong kind of argument is a TypeError, as in the core.
INTERFACE_TYPE_ERRORS = [
    ("eager_tensor_loss", BOTH_INTERFACES,
     lambda x: dict(loss=tf.reduce_sum(x * x)), {},
     "loss must be a zero-argument callable returning the loss; got an eager "
     "Tensor"),
    ("loss_not_callable", BOTH_INTERFACES, lambda x: dict(loss=3.0), {},
     "In eager mode loss must be a zero-argument callable; got float"),
    ("var_list_entry", BOTH_INTERFACES, lambda x: dict(var_list=[x, "w"]), {},
     "`var_list` entries must be tf.Variable.*got str"),
    # (LbfgsOptimizerInterface takes no constraints at all.)
    ("equalities_not_list", (ScipyOptimizerInterface,),
     lambda x: dict(equalities=lambda: x[0]), {},
     "equalities must be a list of constraints; got function"),
    ("step_callback", BOTH_INTERFACES, lambda x: {},
     dict(step_callback="print"), "step_callback must be callable; got str"),
    ("loss_callback", BOTH_INTERFACES, lambda x: {}, dict(loss_callback=3),
     "loss_callback must be callable; got int"),
    ("progress_callback", BOTH_INTERFACES, lambda x: {},
     dict(progress_callback=[]),
     "progress_callback must be callable; got list"),
    ("fetches", BOTH_INTERFACES, lambda x: {}, dict(fetches="loss"),
     "fetches must be a list of values to pass to loss_callback; got str"),
]
INTERFACE_TYPE_CASES = [
    pytest.param(cls, make_kwargs, minimize_kwargs, match,
                 id="%s-%s" % (name, cls.__name__))
    for name, classes, make_kwargs, minimize_kwargs, match
    in INTERFACE_TYPE_ERRORS for cls in classes]


@pytest.mark.parametrize("cls, make_kwargs, minimize_kwargs, match",
                         INTERFACE_TYPE_CASES)
def test_interface_type_errors_leave_variables(cls, make_kwargs,
                                               minimize_kwargs, match):
  x = tf.Variable([1., 2.])
  kwargs = dict(loss=lambda: tf.reduce_sum(x * x), var_list=[x])
  kwargs.update(make_kwargs(x))
  with pytest.raises(TypeError, match=match):
    cls(**kwargs).minimize(**minimize_kwargs)
  np.testing.assert_array_equal(x.numpy(), [1., 2.])


def test_graph_session_and_feed_dict_type_errors():
  with tf.Graph().as_default():
    x = tf.compat.v1.Variable([1., 2.])
    optimizer = ScipyOptimizerInterface(tf.reduce_sum(x * x), [x])
    with tf.compat.v1.Session() as session:
      session.run(x.initializer)
      with pytest.raises(TypeError,
                         match="session must be a tf.compat.v1.Session; got "
                         "str"):
        optimizer.minimize("session")
      with pytest.raises(TypeError, match="feed_dict must be a dict; got list"):
        optimizer.minimize(session, feed_dict=[1])
      np.testing.assert_array_equal(session.run(x), [1., 2.])


@pytest.mark.parametrize("jit_compile", [False, True], ids=["tf_function",
                                                            "xla"])
@pytest.mark.parametrize("option, value, match", [
    ("tolerance", "tight", "`tolerance` must be a real number"),
    ("stopping_condition", 3, "`stopping_condition` must be callable"),
    ("num_correction_pairs", 0, "`num_correction_pairs` must be >= 1"),
])
def test_lbfgs_interface_solver_option_errors(option, value, match,
                                              jit_compile):
  x = tf.Variable([1., 2.], dtype=tf.float64)
  optimizer = LbfgsOptimizerInterface(lambda: tf.reduce_sum(x * x), [x],
                                      jit_compile=jit_compile,
                                      **{option: value})
  with pytest.raises((TypeError, ValueError), match=match):
    optimizer.minimize()
  np.testing.assert_array_equal(x.numpy(), [1., 2.])


@pytest.mark.parametrize("cls", [ScipyOptimizerInterface,
                                 LbfgsOptimizerInterface])
def test_interfaces_refuse_tf_function(cls):
  x = tf.Variable([1., 2.])

  @tf.function
  def build():
    cls(lambda: tf.reduce_sum(x * x), [x])

  with pytest.raises(ValueError, match="cannot be created inside "
                     "tf.function"):
    build()


# --- keras.fit ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras_data():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(16, 3)).astype(np.float32)
  y = (x @ np.array([[1.], [-2.], [.5]], np.float32)).astype(np.float32)
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
  model.compile(loss="mse")
  return model, x, y


METHODS = ["lbfgs", "L-BFGS-B"]


def _empty_filtered(x, y):
  return tf.data.Dataset.from_tensor_slices((x, y)).batch(4).filter(
      lambda a, b: tf.reduce_sum(a) > 1e9)


KERAS_ERRORS = [
    ("empty_arrays", lambda x, y: dict(x=x[:0], y=y[:0]),
     ValueError, "x is empty \\(0 samples\\)"),
    ("empty_filtered_dataset", lambda x, y: dict(x=_empty_filtered(x, y)),
     ValueError, "x is a tf.data.Dataset that yields no batches"),
    ("empty_dataset", lambda x, y: dict(
        x=tf.data.Dataset.from_tensor_slices((x, y)).batch(4).take(0)),
     ValueError, "x is a tf.data.Dataset that yields no batches"),
    ("y_rows_mismatch", lambda x, y: dict(x=x, y=y[:5]),
     ValueError,
     "Data cardinality is ambiguous.*'x' sizes: 16.*'y' sizes: 5"),
    ("sample_weight_rows_mismatch",
     lambda x, y: dict(x=x, y=y, sample_weight=np.ones(3)),
     ValueError, "Data cardinality is ambiguous.*'sample_weight' sizes: 3"),
    ("zero_sample_weights",
     lambda x, y: dict(x=x, y=y, sample_weight=np.zeros(16, np.float32)),
     ValueError, "sample_weight is 0 for every sample"),
    # Every pass over an infinite dataset would hang.
    ("infinite_validation_data", lambda x, y: dict(
        x=x, y=y, validation_data=tf.data.Dataset.from_tensor_slices(
            (x, y)).batch(4).repeat()),
     ValueError, "validation_data is an infinite tf.data.Dataset"),
    ("filtered_infinite_x", lambda x, y: dict(
        x=tf.data.Dataset.from_tensor_slices((x, y)).repeat().filter(
            lambda a, b: True).batch(4)),
     ValueError, "x is an infinite tf.data.Dataset"),
    ("empty_validation_dataset", lambda x, y: dict(
        x=x, y=y, validation_data=_empty_filtered(x, y)),
     ValueError, "validation_data is a tf.data.Dataset that yields no "
     "batches"),
    ("empty_validation_arrays", lambda x, y: dict(
        x=x, y=y, validation_data=(x[:0], y[:0])),
     ValueError, "validation_data's x_val is empty \\(0 samples\\)"),
    ("validation_rows_mismatch", lambda x, y: dict(
        x=x, y=y, validation_data=(x, y[:5])),
     ValueError, "Data cardinality is ambiguous.*'validation_data's x_val' "
     "sizes: 16.*'y_val' sizes: 5"),
    ("validation_data_without_y", lambda x, y: dict(
        x=x, y=y, validation_data=(x,)),
     ValueError, "validation_data must be \\(x_val, y_val\\).*got a tuple "
     "of 1"),
    ("validation_data_y_none", lambda x, y: dict(
        x=x, y=y, validation_data=(x, None)),
     ValueError, "validation_data needs x_val and y_val; got None for "
     "y_val"),
    # Keras fit arguments, which the SciPy path used to hand SciPy.
    ("epochs", lambda x, y: dict(x=x, y=y, epochs=3),
     ValueError, "epochs is a Keras model.fit argument.*pass max_iterations"),
    ("class_weight", lambda x, y: dict(x=x, y=y, class_weight={0: 1.}),
     ValueError, "class_weight is a Keras model.fit argument.*sample_weight"),
    ("unknown_option", lambda x, y: dict(x=x, y=y, maxfun=3),
     ValueError, "got unknown option\\(s\\) maxfun; expected"),
    # A wrong type is a TypeError, as in the core.
    ("max_iterations_float", lambda x, y: dict(x=x, y=y, max_iterations=2.5),
     TypeError, r"`max_iterations` must be a Python integer >= 0; got 2\.5"),
    ("callbacks_str", lambda x, y: dict(x=x, y=y, callbacks="EarlyStopping"),
     TypeError, "callbacks must be a list of Keras callbacks; got str"),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("row", KERAS_ERRORS, ids=[r[0] for r in
                                                    KERAS_ERRORS])
def test_keras_fit_errors(row, method, keras_data):
  _, make_kwargs, error, match = row
  model, x, y = keras_data
  before = [v.numpy() for v in model.trainable_variables]
  kwargs = dict(max_iterations=3)
  kwargs.update(make_kwargs(x, y))
  with pytest.raises(error, match=match):
    tf_extopt.keras.fit(model, verbose=0, method=method, **kwargs)
  for v, b in zip(model.trainable_variables, before):
    np.testing.assert_array_equal(v.numpy(), b)


@pytest.mark.parametrize("method", METHODS)
def test_keras_fit_accepts_one_callback(method, keras_data):
  model, x, y = keras_data
  seen = []
  callback = keras.callbacks.LambdaCallback(
      on_epoch_end=lambda epoch, logs: seen.append(logs["loss"]))
  history = tf_extopt.keras.fit(model, x, y, max_iterations=3, verbose=0,
                                method=method, callbacks=callback)
  assert len(seen) == len(history.history["loss"]) >= 1
  assert seen == history.history["loss"]
  assert math.isfinite(seen[-1])
